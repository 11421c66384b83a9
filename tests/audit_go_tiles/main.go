// Command audittiles reads a paywire audit log through its C2SP tlog-tiles with Go's own transparency-log code
// (golang.org/x/mod/sumdb/tlog: TileHashReader checks every tile it loads against the signed tree), an
// implementation independent of paywire's.
//
//	audittiles VKEY PREFIX_URL INDEX...
//
// It fetches PREFIX_URL/checkpoint (signed by VKEY), builds an inclusion proof of each INDEX from the tiles,
// reads the entry from its entry bundle and checks the proof against the checkpoint's root; "OK" and exit 0.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

type tiles struct{ prefix string }

func (t tiles) Height() int { return height }

func (t tiles) url(tile tlog.Tile) string {
	// Go names tiles "tile/8/L/N" and bundles "tile/8/data/N"; C2SP tlog-tiles drops the height
	path := strings.TrimPrefix(tile.Path(), "tile/8/")
	path = strings.Replace(path, "data/", "entries/", 1)
	return t.prefix + "/tile/" + path
}

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body, nil
}

func (t tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		if os.Getenv("AUDITTILES_DEBUG") != "" {
			fmt.Fprintln(os.Stderr, "GET", t.url(tile))
		}
		data, err := get(t.url(tile))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func run(args []string) error {
	if len(args) < 3 {
		return errors.New("usage: audittiles VKEY PREFIX_URL INDEX...")
	}
	v, err := note.NewVerifier(args[0])
	if err != nil {
		return fmt.Errorf("vkey: %w", err)
	}
	src := tiles{strings.TrimRight(args[1], "/")}
	raw, err := get(src.prefix + "/checkpoint")
	if err != nil {
		return err
	}
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return err
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return err
	}
	tree := tlog.Tree{N: size, Hash: root}
	thr := tlog.TileHashReader(tree, src)
	for _, a := range args[2:] {
		idx, err := strconv.ParseInt(a, 10, 64)
		if err != nil {
			return err
		}
		proof, err := tlog.ProveRecord(size, idx, thr)
		if err != nil {
			return fmt.Errorf("inclusion proof of %d from the tiles: %w", idx, err)
		}
		bundle := tlog.Tile{H: height, L: -1, N: idx / 256, W: 256}
		if (idx/256+1)*256 > size {
			bundle.W = int(size % 256)
		}
		data, err := src.ReadTiles([]tlog.Tile{bundle})
		if err != nil {
			return err
		}
		rest := data[0]
		var entry []byte
		for i := int64(0); i <= idx%256; i++ {
			if len(rest) < 2 {
				return errors.New("short entry bundle")
			}
			l := int(binary.BigEndian.Uint16(rest))
			if len(rest) < 2+l {
				return errors.New("short entry bundle")
			}
			entry, rest = rest[2:2+l], rest[2+l:]
		}
		if err := tlog.CheckRecord(proof, size, root, idx, tlog.RecordHash(entry)); err != nil {
			return fmt.Errorf("entry %d: inclusion: %w", idx, err)
		}
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("OK")
}
