// Pays through paywire's browser paywall with an injected EIP-1193 wallet, without a browser:
// `node seller_paywall_wallet.mjs URL PRIVATE_KEY`.
// 1. GET URL as a browser (Accept: text/html, Mozilla UA) → the 402 paywall page;
// 2. take the page's own window.x402 config and its <script id="paywire-paywall">, run them with
//    `window.ethereum` = a minimal EIP-1193 provider backed by a viem local account (eth_requestAccounts,
//    eth_chainId, eth_signTypedData_v4 — what MetaMask & co. answer);
// 3. call the page's pay function (what its "Pay" button does) and print {status, body, settlement, calls}.
import vm from "node:vm";
import { privateKeyToAccount } from "viem/accounts";

const [url, key] = process.argv.slice(2);
const account = privateKeyToAccount(key);
const page = await fetch(url, {
  headers: { Accept: "text/html,application/xhtml+xml", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) paywire-test" },
});
const html = await page.text();
const config = html.match(/<script>window\.x402 = ([\s\S]*?);<\/script>/);
const script = html.match(/<script id="paywire-paywall">([\s\S]*?)<\/script>/);
if (page.status !== 402 || !config || !script) {
  console.log(JSON.stringify({ error: `no paywall at ${url}: ${page.status}` }));
  process.exit(1);
}
const calls = [];
const chainId = Number(JSON.parse(config[1]).paymentRequired.accepts[0].network.split(":")[1]);
const ethereum = {
  async request({ method, params }) {
    calls.push(method);
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [account.address];
    if (method === "eth_chainId") return "0x" + chainId.toString(16);
    if (method === "eth_signTypedData_v4") {
      const [from, json] = params;
      if (from.toLowerCase() !== account.address.toLowerCase()) throw new Error("unknown account");
      const typed = JSON.parse(json);
      const { EIP712Domain, ...types } = typed.types;
      return account.signTypedData({ domain: typed.domain, types, primaryType: typed.primaryType, message: typed.message });
    }
    throw new Error(`unsupported method ${method}`);
  },
};
const window = { ethereum };
const context = vm.createContext({ window, fetch, crypto, btoa, atob, TextEncoder, TextDecoder, JSON, Math, Date,
  Uint8Array, String, Number, Error, Promise, console });
vm.runInContext(`window.x402 = ${config[1]};`, context);
vm.runInContext(script[1], context);
const response = await window.paywirePay(window.ethereum);
const body = await response.text();
console.log(JSON.stringify({ status: response.status, body, settlement: window.paywireSettlement(response), calls }));
