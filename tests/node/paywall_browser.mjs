// Pays through paywire's browser paywall in a real headless Chromium, like a user with a browser wallet:
// `node paywall_browser.mjs URL PRIVATE_KEY SCREENSHOT [approve|reject|switch]`.
// 1. open URL (the browser's own Accept/User-Agent) → the 402 paywall page;
// 2. `window.ethereum` is injected before any page script runs: a minimal EIP-1193 provider whose requests
//    are answered in Node by a viem local account (eth_requestAccounts, eth_chainId, eth_signTypedData_v4);
//    with `reject` the wallet refuses to sign (EIP-1193 error 4001, as when the user clicks "Reject");
//    with `switch` it starts on chain 1 and follows wallet_switchEthereumChain;
// 3. click the page's "Pay with wallet" button and wait until the page shows the paid result (or an error);
// 4. print one JSON line: what the page displayed, the paid response as the page's fetch received it,
//    the wallet calls, console errors and failed requests. The browser is Debian's /usr/bin/chromium
//    (CHROMIUM overrides); playwright-core never downloads one.
import { chromium } from "playwright-core";
import { privateKeyToAccount } from "viem/accounts";

const [url, key, screenshot, mode = "approve"] = process.argv.slice(2);
const account = privateKeyToAccount(key);
const TIMEOUT = 120_000;  // a loaded 2-core machine, settlement on a chain that mines once a second
const calls = [];
const consoleErrors = [];
const failedRequests = [];
const paidResponses = [];
const step = (what) => process.stderr.write(`[paywall_browser ${new Date().toISOString()}] ${what}\n`);

let walletChain = mode === "switch" ? "0x1" : null;  // null: the chain the page asks for

async function wallet(method, params, chainIdHex) {
  calls.push(method);
  if (method === "eth_requestAccounts" || method === "eth_accounts") return { result: [account.address] };
  if (method === "eth_chainId") return { result: walletChain || chainIdHex };
  if (method === "wallet_switchEthereumChain" && walletChain) {
    walletChain = params[0].chainId;
    return { result: null };
  }
  if (method === "eth_signTypedData_v4") {
    if (mode === "reject") return { error: { code: 4001, message: "User rejected the request." } };
    const [from, json] = params;
    if (from.toLowerCase() !== account.address.toLowerCase()) {
      return { error: { code: 4100, message: "unknown account" } };
    }
    const typed = JSON.parse(json);
    if (walletChain && Number(typed.domain.chainId) !== Number(walletChain)) {
      return { error: { code: 4901, message: "typed data for another chain" } };
    }
    const { EIP712Domain, ...types } = typed.types;
    const signature = await account.signTypedData({
      domain: typed.domain, types, primaryType: typed.primaryType, message: typed.message,
    });
    return { result: signature };
  }
  return { error: { code: 4200, message: `unsupported method ${method}` } };
}

// Runs in the page before its own scripts: the provider object a wallet extension would inject.
function injectProvider() {
  const listeners = {};
  window.ethereum = {
    isPaywireTestWallet: true,
    async request({ method, params }) {
      const answer = await window.__paywireWallet(method, params === undefined ? [] : params);
      if (answer.error) throw Object.assign(new Error(answer.error.message), { code: answer.error.code });
      return answer.result;
    },
    on(event, fn) { (listeners[event] = listeners[event] || []).push(fn); },
    removeListener(event, fn) { listeners[event] = (listeners[event] || []).filter((f) => f !== fn); },
  };
}

step("launching chromium");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: TIMEOUT,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});  // no userDataDir: Playwright gives every launch a fresh temporary profile
let out;
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  let chainIdHex = "0x0";
  await page.exposeFunction("__paywireWallet", (method, params) => wallet(method, params, chainIdHex));
  await page.addInitScript(injectProvider);
  page.on("console", (msg) => {
    if (msg.type() === "error") consoleErrors.push({ text: msg.text(), url: msg.location().url || null });
  });
  page.on("pageerror", (err) => consoleErrors.push({ text: String(err), url: null }));
  page.on("requestfailed", (req) => failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`));
  page.on("response", (response) => {  // the page's paying fetch (it carries PAYMENT-SIGNATURE)
    if (!("payment-signature" in response.request().headers())) return;
    paidResponses.push((async () => {
      const headers = await response.allHeaders();
      // the page reads the body of a paid (2xx) answer only; asking Chromium for an unread one can hang
      const body = response.ok() ? await response.text().catch((err) => `unreadable: ${err}`) : null;
      return { status: response.status(), body,
               paymentResponse: headers["payment-response"] || null, paymentRequired: headers["payment-required"] || null,
               contentType: headers["content-type"] || null };
    })());
  });

  step(`opening ${url}`);
  const first = await page.goto(url, { waitUntil: "load" });
  const config = await page.evaluate(() => window.x402 || null);
  if (config) chainIdHex = "0x" + Number(config.paymentRequired.accepts[0].network.split(":")[1]).toString(16);
  const text = (sel) => page.locator(sel).first().textContent().then((t) => (t || "").trim());
  const shown = {
    status: first ? first.status() : null,
    contentType: first ? first.headers()["content-type"] : null,
    userAgent: await page.evaluate(() => navigator.userAgent),
    title: await page.title(),
    app: await text("#app"),
    description: await text("#description"),
    price: await text("#price"),
    details: await text("#details"),
    hasProvider: await page.evaluate(() => Boolean(window.ethereum && window.ethereum.isPaywireTestWallet)),
  };
  const button = page.getByRole("button", { name: "Pay with wallet" });
  shown.buttonEnabled = await button.isEnabled();
  step("clicking Pay");
  await button.click();
  await page.waitForFunction(() => document.querySelector("#result pre") ||
    (document.getElementById("status") && document.getElementById("status").className === "error") ||
    !document.getElementById("pay"), null, { timeout: TIMEOUT });
  step("result shown");
  await page.screenshot({ path: screenshot, fullPage: true });
  const after = await page.evaluate(() => {
    const byId = (id) => document.getElementById(id);
    return {
      status: byId("status") ? byId("status").textContent.trim() : null,
      statusIsError: byId("status") ? byId("status").className === "error" : null,
      result: byId("result") ? byId("result").textContent : null,
      buttonDisabled: byId("pay") ? byId("pay").disabled : null,
      bodyText: document.body ? document.body.innerText : null,
      // elements whose box sticks out of the paywall card (long hashes must wrap)
      overflowing: (() => {
        const main = document.querySelector("main");
        if (!main) return [];
        const right = main.getBoundingClientRect().right;
        return Array.from(main.querySelectorAll("*")).filter((el) => el.getBoundingClientRect().right > right + 1 ||
          el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === "visible")
          .map((el) => el.id || el.tagName.toLowerCase());
      })(),
    };
  });
  out = { paywall: shown, after, paid: await Promise.all(paidResponses), calls, consoleErrors, failedRequests };
} catch (err) {
  out = { error: String(err && err.stack ? err.stack : err), calls, consoleErrors, failedRequests };
} finally {
  step("closing chromium");
  await browser.close();
}
console.log(JSON.stringify(out));
