// The official TypeScript MPP server (mppx@0.11.0, pinned in package-lock.json) with its native `evm/charge`
// method, which paywire's buying client pays. Settlement is mppx's `settle` hook, done here with viem: the
// settler key sends the token's EIP-3009 `transferWithAuthorization` to the devnet over JSON-RPC and waits
// for the receipt, so nothing of paywire runs on this side.
//
// Config: one JSON argument {rpcUrl, chainId, token, tokenName, tokenVersion, decimals, recipient, settlerKey,
// secretKey, realm, amount (display units, e.g. "0.01"), description, requiresAuth (credential goes in
// Payment-Authorization, announced by the challenge's `header` parameter)}.
// Routes: GET /paid (paid), GET /stats ({runs, settlements}). Prints {"port": N} once it accepts connections.
import * as http from "node:http";
import { Errors } from "mppx";
import { Mppx, NodeListener, Request as MppRequest } from "mppx/server";
import { charge } from "mppx/evm/server";
import { createPublicClient, createWalletClient, defineChain, http as rpc, parseSignature } from "viem";
import { privateKeyToAccount } from "viem/accounts";

const cfg = JSON.parse(process.argv[2]);
const chain = defineChain({
  id: cfg.chainId,
  name: "paywire devnet",
  nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
  rpcUrls: { default: { http: [cfg.rpcUrl] } },
});
const settler = privateKeyToAccount(cfg.settlerKey);
const reader = createPublicClient({ chain, transport: rpc(cfg.rpcUrl) });
const writer = createWalletClient({ account: settler, chain, transport: rpc(cfg.rpcUrl) });

const twaAbi = [{
  type: "function", name: "transferWithAuthorization", stateMutability: "nonpayable", outputs: [],
  inputs: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" }, { name: "v", type: "uint8" }, { name: "r", type: "bytes32" },
    { name: "s", type: "bytes32" },
  ],
}];

const settlements = [];
let queue = Promise.resolve();

// One transaction at a time from the settler key (viem picks the account nonce per send).
function serial(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

async function settle({ payload }) {
  return serial(async () => {
    const sig = parseSignature(payload.signature);
    const v = sig.v !== undefined ? Number(sig.v) : 27 + sig.yParity;
    const args = [payload.from, payload.to, BigInt(payload.value), BigInt(payload.validAfter),
      BigInt(payload.validBefore), payload.nonce, v, sig.r, sig.s];
    try {
      // Simulate first: a replayed or bad authorization reverts here and nothing is sent.
      const { request } = await reader.simulateContract({
        account: settler, address: cfg.token, abi: twaAbi, functionName: "transferWithAuthorization", args,
      });
      const hash = await writer.writeContract(request);
      const receipt = await reader.waitForTransactionReceipt({ hash, timeout: 120_000 });
      if (receipt.status !== "success") throw new Error(`transferWithAuthorization reverted in ${hash}`);
      settlements.push(hash);
      return { reference: hash };
    } catch (err) {
      const reason = (err && (err.shortMessage || err.message)) || String(err);
      throw new Errors.VerificationFailedError({ reason: `settlement failed: ${reason.split("\n")[0]}` });
    }
  });
}

const mppx = Mppx.create({
  realm: cfg.realm,
  secretKey: cfg.secretKey,
  requiresAuth: Boolean(cfg.requiresAuth),
  methods: [charge({
    currency: cfg.token,
    recipient: cfg.recipient,
    chainId: cfg.chainId,
    decimals: cfg.decimals,
    authorization: { name: cfg.tokenName, version: cfg.tokenVersion },
    settle,
  })],
});

let runs = 0;
const paidRoute = mppx.evm.charge({ amount: cfg.amount, description: cfg.description });

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/stats") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ runs, settlements }));
      return;
    }
    if (url.pathname !== "/paid") {
      res.statusCode = 404;
      res.end("not found");
      return;
    }
    const result = await paidRoute(MppRequest.fromNodeListener(req, res));
    if (result.status === 402) {
      await NodeListener.sendResponse(res, result.challenge);
      return;
    }
    runs += 1;
    const body = JSON.stringify({ server: "mppx", runs });
    const response = result.withReceipt(new Response(body, { headers: { "content-type": "application/json" } }));
    await NodeListener.sendResponse(res, response);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) res.statusCode = 500;
    res.end("internal error");
  }
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
