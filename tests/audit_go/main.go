// Command auditverify checks paywire audit proofs with Go's own signed-note and transparency-log code
// (golang.org/x/mod/sumdb/note and sumdb/tlog), an implementation independent of paywire's.
//
//	auditverify VKEY PROOF_FILE [OLD_CHECKPOINT_FILE CONSISTENCY_FILE]
//
// PROOF_FILE is a c2sp.org/tlog-proof whose extra line carries the entry. It prints "OK" and exits 0 when the
// checkpoint is signed by VKEY, the entry is included at the proof's index and, with the optional files, the
// old checkpoint (also signed by VKEY) is a prefix of the new one by the consistency proof.
package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func openCheckpoint(msg []byte, v note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, errors.New("checkpoint has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint size: %w", err)
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint root: %w", err)
	}
	return checkpoint{lines[0], size, root}, nil
}

func hashes(lines []string) ([]tlog.Hash, error) {
	var out []tlog.Hash
	for _, l := range lines {
		if l == "" {
			continue
		}
		h, err := tlog.ParseHash(l)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func run(args []string) error {
	if len(args) != 2 && len(args) != 4 {
		return errors.New("usage: auditverify VKEY PROOF_FILE [OLD_CHECKPOINT_FILE CONSISTENCY_FILE]")
	}
	v, err := note.NewVerifier(args[0])
	if err != nil {
		return fmt.Errorf("vkey: %w", err)
	}
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	head, cpText, ok := strings.Cut(string(raw), "\n\n")
	if !ok {
		return errors.New("tlog-proof has no empty line")
	}
	lines := strings.Split(head, "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(lines[1], "extra ") ||
		!strings.HasPrefix(lines[2], "index ") {
		return errors.New("not a tlog-proof with an extra line")
	}
	entry, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	if err != nil {
		return fmt.Errorf("extra: %w", err)
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	proof, err := hashes(lines[3:])
	if err != nil {
		return fmt.Errorf("proof: %w", err)
	}
	cp, err := openCheckpoint([]byte(cpText), v)
	if err != nil {
		return err
	}
	if err := tlog.CheckRecord(proof, cp.size, cp.root, index, tlog.RecordHash(entry)); err != nil {
		return fmt.Errorf("inclusion of entry %d in tree %d: %w", index, cp.size, err)
	}
	if len(args) == 4 {
		oldRaw, err := os.ReadFile(args[2])
		if err != nil {
			return err
		}
		old, err := openCheckpoint(oldRaw, v)
		if err != nil {
			return fmt.Errorf("old %w", err)
		}
		consRaw, err := os.ReadFile(args[3])
		if err != nil {
			return err
		}
		cons, err := hashes(strings.Split(string(consRaw), "\n"))
		if err != nil {
			return fmt.Errorf("consistency proof: %w", err)
		}
		if err := tlog.CheckTree(cons, cp.size, cp.root, old.size, old.root); err != nil {
			return fmt.Errorf("consistency %d -> %d: %w", old.size, cp.size, err)
		}
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}
