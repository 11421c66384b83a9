"""C2SP formats byte for byte: signed notes (the spec's and Go sumdb/note's examples), checkpoints, Ed25519
cosignatures (the spec's example line), tlog-proof and tlog-witness bodies."""

from __future__ import annotations

import asyncio
import base64

import pytest

from paywire.audit.checkpoint import (
    Checkpoint,
    FormatError,
    TlogProof,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_checkpoint_body,
    parse_signed_checkpoint,
    parse_tlog_proof,
)
from paywire.audit.note import (
    COSIGNATURE_V1,
    Note,
    NoteError,
    Signer,
    cosign,
    cosignature_message,
    parse_note,
    parse_signature_line,
    parse_skey,
    parse_vkey,
    sign_note,
    verify_note,
)

# c2sp.org/signed-note, "Verifier keys" → "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg"
             "1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
# golang.org/x/mod/sumdb/note's documented example (data only): Ed25519 is deterministic, so our signature must
# equal theirs byte for byte.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
# c2sp.org/tlog-checkpoint and tlog-cosignature examples.
SPEC_CHECKPOINT = ("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
                   "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGz"
                   "Gku9nTo+zyWE+xeMcTOAYQ8=\n")
SPEC_COSIG = ("— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqh"
              "f5nNo0xUe+mbIUBkBIfZ+qnA==")


def test_the_spec_example_note_verifies_with_the_spec_vkey() -> None:
    v = parse_vkey(SPEC_VKEY)
    assert v.key_id.hex() == "530d903a", "key id = SHA-256(name ‖ \\n ‖ 0x01 ‖ key)[:4]"
    assert v.vkey == SPEC_VKEY, "the vkey re-encodes to the same text"
    verified = verify_note(parse_note(SPEC_NOTE), [v])
    assert [x.verifier.name for x in verified] == ["example.com/foo"], "the spec's example note verifies"


def test_signing_reproduces_go_sumdb_notes_example_byte_for_byte() -> None:
    signer = parse_skey(GO_SKEY)
    assert signer.verifier.vkey == GO_VKEY, "the signer's vkey equals Go's"
    assert signer.skey == GO_SKEY, "the signing key re-encodes to the same text"
    note = asyncio.run(sign_note(GO_TEXT, [signer]))
    assert note.format() == GO_TEXT + "\n" + GO_SIG, "our signed note equals Go's"


def test_a_note_changed_after_signing_is_rejected() -> None:
    v = parse_vkey(SPEC_VKEY)
    note = parse_note(SPEC_NOTE)
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(Note("This is an example message!\n", note.signatures), [v])
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_note(note, [parse_vkey(GO_VKEY)])


@pytest.mark.parametrize("bad", [
    "no blank line\n— a b\n",
    "text\n\n— name\n",
    "text\n\n- name AAAAAAAA\n",
    "text\x01\n\n— example.com/foo AAAAAAAA\n",
    "text\n\n— example.com/foo AAAAAAAA",
    "text\n\n— example.com/foo !!!!\n",
])
def test_malformed_notes_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        parse_note(bad)


@pytest.mark.parametrize("bad", [
    "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong id
    "example.com/foo+530d903a",
    "exa mple+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    "example.com/foo+530d903a+AwkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # type 0x03
])
def test_malformed_vkeys_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        parse_vkey(bad)


def test_checkpoint_body_of_the_spec_example() -> None:
    cp, note = parse_signed_checkpoint(SPEC_CHECKPOINT)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163), "origin and size lines"
    assert base64.b64encode(cp.root).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "root line"
    assert cp.body() == note.text, "the body re-encodes to the signed text"
    assert note.format() == SPEC_CHECKPOINT, "the note re-encodes byte for byte"


@pytest.mark.parametrize("bad", ["o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "o\n1\nAAAA\n", "o\n1\n",
                                 "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"])
def test_malformed_checkpoints_are_refused(bad: str) -> None:
    with pytest.raises(FormatError):
        parse_checkpoint_body(bad)


def test_the_spec_cosignature_line_carries_its_timestamp() -> None:
    sig = parse_signature_line(SPEC_COSIG)
    assert len(sig.signature) == 8 + 64, "timestamped_signature: u64 timestamp + 64-byte Ed25519 signature"
    assert int.from_bytes(sig.signature[:8], "big") == 1679315147, "the example's timestamp (time 1679315147)"
    body = parse_signed_checkpoint(SPEC_CHECKPOINT)[1].text
    assert cosignature_message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"), "the signed message is the spec's"


def test_cosignatures_verify_with_the_witness_key_only() -> None:
    log = Signer.generate("paywire.example/log")
    witness = Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1)
    body = Checkpoint("paywire.example/log", 3, bytes(range(32))).body()

    async def run() -> Note:
        note = await sign_note(body, [log])
        return note.with_signatures([await cosign(body, witness, 1_700_000_000)])

    note = asyncio.run(run())
    parsed = parse_note(note.format())
    verified = verify_note(parsed, [log.verifier, witness.verifier])
    assert {(x.verifier.name, x.timestamp) for x in verified} == {
        ("paywire.example/log", 0), ("witness.example/w1", 1_700_000_000)}, "both signatures verify"
    assert witness.verifier.key_id != Signer.from_seed("witness.example/w1", witness._seed or b"").verifier.key_id, (
        "a cosigner key id uses type 0x04, not 0x01")
    other_ts = Note(parsed.text, tuple(s if s.name != "witness.example/w1" else type(s)(
        s.name, s.key_id, (1_700_000_001).to_bytes(8, "big") + s.signature[8:]) for s in parsed.signatures))
    with pytest.raises(NoteError, match="does not verify"):
        verify_note(other_ts, [witness.verifier])


def test_tlog_proof_format_round_trips_and_parses_the_spec_header() -> None:
    hashes = ("gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=", "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=")
    text = ("c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\nindex 73894\n"
            + "".join(h + "\n" for h in hashes) + "\n" + SPEC_CHECKPOINT)
    proof = parse_tlog_proof(text)
    assert proof.index == 73894, "index line"
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz"), "extra line"
    assert [base64.b64encode(h).decode() for h in proof.proof] == list(hashes), "proof lines"
    assert proof.format() == text, "re-encodes byte for byte"
    bare = TlogProof(0, (), SPEC_CHECKPOINT)
    assert parse_tlog_proof(bare.format()) == bare, "no extra line, empty proof"
    with pytest.raises(FormatError):
        parse_tlog_proof(text.replace("index 73894", "index 073894"))


def test_add_checkpoint_body_of_the_witness_spec() -> None:
    proof = ["PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=", "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=",
             "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=", "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0="]
    body = "old 20852014\n" + "".join(p + "\n" for p in proof) + "\n" + SPEC_CHECKPOINT
    old, hashes, checkpoint = parse_add_checkpoint(body)
    assert old == 20852014, "old size line"
    assert len(hashes) == 4, "four consistency proof lines"
    assert checkpoint == SPEC_CHECKPOINT, "the checkpoint follows verbatim"
    assert format_add_checkpoint(old, hashes, checkpoint) == body, "re-encodes byte for byte"
