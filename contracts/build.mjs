#!/usr/bin/env node
// Builds the Solidity sources in contracts/src/ with the pinned npm `solc` and writes one JSON
// artifact per contract to src/paywire/evm/artifacts/<Name>.json.
//
//   node contracts/build.mjs           rebuild and write the artifacts
//   node contracts/build.mjs --check   rebuild in memory; exit 1 if the committed artifacts differ
//
// The output is deterministic: same sources + same compiler => byte-identical files.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, unlinkSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const CONTRACTS_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = dirname(CONTRACTS_DIR);
const SRC_DIR = join(CONTRACTS_DIR, "src");
const OUT_DIR = join(REPO_ROOT, "src", "paywire", "evm", "artifacts");

// Everything that determines the emitted bytecode. Recorded verbatim in every artifact.
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: {
    "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
  },
};

function fail(message) {
  process.stderr.write(`build.mjs: ${message}\n`);
  process.exit(1);
}

function loadSolc() {
  let solc;
  try {
    solc = require("solc");
  } catch {
    fail("npm package 'solc' is not installed; run `npm ci` in contracts/ first");
  }
  const pinned = JSON.parse(readFileSync(join(CONTRACTS_DIR, "package.json"), "utf8")).dependencies.solc;
  const full = solc.version(); // e.g. "0.8.30+commit.73712a01.Emscripten.clang"
  if (!full.startsWith(`${pinned}+`)) {
    fail(`installed solc is ${full} but package.json pins ${pinned}; run \`npm ci\` in contracts/`);
  }
  return { solc, compiler: `soljson-v${full.replace(/\.Emscripten\.clang$/, "")}` };
}

function posixRelative(from, to) {
  return relative(from, to).split("\\").join("/");
}

function readSources() {
  const files = readdirSync(SRC_DIR)
    .filter((f) => f.endsWith(".sol"))
    .sort();
  if (files.length === 0) fail(`no .sol files in ${SRC_DIR}`);
  const sources = {};
  const hashes = {};
  for (const file of files) {
    const path = join(SRC_DIR, file);
    const bytes = readFileSync(path);
    const unit = posixRelative(REPO_ROOT, path); // "contracts/src/X.sol"
    sources[unit] = { content: bytes.toString("utf8") };
    hashes[unit] = createHash("sha256").update(bytes).digest("hex");
  }
  return { sources, hashes };
}

function compile() {
  const { solc, compiler } = loadSolc();
  const { sources, hashes } = readSources();
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(
    solc.compile(JSON.stringify(input), {
      import: (path) => ({ error: `imports are not supported (each source is standalone): ${path}` }),
    }),
  );

  const diagnostics = output.errors ?? [];
  for (const d of diagnostics) {
    if (d.severity !== "info") process.stderr.write(`${d.formattedMessage ?? d.message}\n`);
  }
  if (diagnostics.some((d) => d.severity === "error")) fail("compilation failed");

  const artifacts = new Map();
  for (const unit of Object.keys(output.contracts ?? {}).sort()) {
    for (const contractName of Object.keys(output.contracts[unit]).sort()) {
      if (artifacts.has(contractName)) fail(`duplicate contract name ${contractName}`);
      const c = output.contracts[unit][contractName];
      // Key order here is the key order in the file.
      const artifact = {
        contractName,
        abi: c.abi,
        bytecode: `0x${c.evm.bytecode.object}`,
        deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
        compiler,
        settings: SETTINGS,
        sourcePath: unit,
        sourceSha256: hashes[unit],
      };
      artifacts.set(contractName, `${JSON.stringify(artifact, null, 2)}\n`);
    }
  }
  return artifacts;
}

// Artifacts in OUT_DIR that this script produced earlier (recognised by their sourcePath).
function existingArtifacts() {
  if (!existsSync(OUT_DIR)) return [];
  return readdirSync(OUT_DIR)
    .filter((f) => f.endsWith(".json"))
    .filter((f) => {
      try {
        const data = JSON.parse(readFileSync(join(OUT_DIR, f), "utf8"));
        return typeof data.sourcePath === "string" && data.sourcePath.startsWith("contracts/src/");
      } catch {
        return false;
      }
    })
    .sort();
}

function describeDifference(file, expected, actual) {
  const exp = expected.split("\n");
  const act = actual.split("\n");
  let i = 0;
  while (i < exp.length && i < act.length && exp[i] === act[i]) i++;
  const clip = (s) => (s === undefined ? "<end of file>" : s.length > 160 ? `${s.slice(0, 160)}...` : s);
  return [
    `  ${file}: first difference at line ${i + 1}`,
    `    committed: ${clip(act[i])}`,
    `    rebuilt:   ${clip(exp[i])}`,
  ].join("\n");
}

function main() {
  const check = process.argv.includes("--check");
  const unknown = process.argv.slice(2).filter((a) => a !== "--check");
  if (unknown.length > 0) fail(`unknown argument(s): ${unknown.join(" ")}`);

  const artifacts = compile();
  const stale = existingArtifacts().filter((f) => !artifacts.has(f.replace(/\.json$/, "")));

  if (check) {
    const problems = [];
    for (const [name, text] of artifacts) {
      const path = join(OUT_DIR, `${name}.json`);
      if (!existsSync(path)) {
        problems.push(`  ${name}.json: missing`);
        continue;
      }
      const committed = readFileSync(path, "utf8");
      if (committed !== text) problems.push(describeDifference(`${name}.json`, text, committed));
    }
    for (const f of stale) problems.push(`  ${f}: no longer produced by any source (stale)`);
    if (problems.length > 0) {
      process.stderr.write(
        `build.mjs --check: committed artifacts in ${posixRelative(REPO_ROOT, OUT_DIR)}/ are out of date:\n` +
          `${problems.join("\n")}\nRun \`node contracts/build.mjs\` and commit the result.\n`,
      );
      process.exit(1);
    }
    process.stdout.write(`build.mjs --check: ${artifacts.size} artifact(s) up to date\n`);
    return;
  }

  mkdirSync(OUT_DIR, { recursive: true });
  for (const [name, text] of artifacts) {
    const path = join(OUT_DIR, `${name}.json`);
    const changed = !existsSync(path) || readFileSync(path, "utf8") !== text;
    if (changed) writeFileSync(path, text);
    process.stdout.write(`${changed ? "wrote" : "unchanged"} ${posixRelative(REPO_ROOT, path)}\n`);
  }
  for (const f of stale) {
    unlinkSync(join(OUT_DIR, f));
    process.stdout.write(`removed stale ${posixRelative(REPO_ROOT, join(OUT_DIR, f))}\n`);
  }
}

main();
