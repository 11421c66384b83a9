// Generate mppx_vectors.json from the official TypeScript MPP SDK (mppx, pinned in tests/node/mpp).
//
// Run: node tests/vectors/generate_mppx_vectors.mjs [out.json]  (default: mppx_vectors.json next to this file).
// mppx and viem are loaded from tests/node/mpp/node_modules. Every expected value comes from mppx's own
// functions (Challenge/Credential/Receipt serializers, the tempo/stripe/evm client methods, Attribution, Proof);
// the inputs are fixed, the clock is frozen and the signing RPC is answered locally, so the output is
// deterministic. tests/test_mpp_tempo_stripe.py checks paywire against it and re-runs this script.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const NM = new URL('../node/mpp/node_modules/', import.meta.url);
const load = (p) => import(new URL(p, NM).href);
const { Challenge, Credential, Receipt } = await load('mppx/dist/index.js');
const tempo = await load('mppx/dist/tempo/index.js');
const Attribution = await load('mppx/dist/tempo/Attribution.js');
const tempoClient = await load('mppx/dist/tempo/client/index.js');
const stripe = await load('mppx/dist/stripe/index.js');
const stripeClient = await load('mppx/dist/stripe/client/index.js');
const evm = await load('mppx/dist/evm/index.js');
const evmClient = await load('mppx/dist/evm/client/index.js');
const { createClient, custom, keccak256 } = await load('viem/_esm/index.js');
const { privateKeyToAccount } = await load('viem/_esm/accounts/index.js');
const { tempoModerato } = await load('viem/_esm/tempo/chains/index.js');
const { TxEnvelopeTempo } = await load('ox/_esm/tempo/index.js');

const OUT = process.argv[2] ?? fileURLToPath(new URL('./mppx_vectors.json', import.meta.url));
const SECRET = 'paywire-vectors-secret-0123456789abcdef';
const PAYER_KEY = '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a'; // anvil dev key #2
const RECIPIENT = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';
const SPLIT_RECIPIENT = '0x90F79bf6EB2c4f870365E785982E1f101E93b906';
const PATH_USD = '0x20c0000000000000000000000000000000000000';
const TOKEN = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
const EXPIRES = '2030-01-01T00:00:00.000Z';
const NOW_MS = Date.parse('2029-12-31T23:50:00.000Z');
Date.now = () => NOW_MS; // validBefore = min(now + 25 s, expires): frozen
const GAS_PRICE = 20_000_000_000n;

const account = privateKeyToAccount(PAYER_KEY);
const hex = (n) => '0x' + n.toString(16);
// A local stand-in for the Tempo RPC: the few read calls viem makes while preparing a transaction.
const transport = custom({
  async request({ method }) {
    switch (method) {
      case 'eth_chainId': return hex(tempoModerato.id);
      case 'eth_gasPrice': return hex(GAS_PRICE);
      case 'eth_maxPriorityFeePerGas': return '0x0';
      case 'eth_estimateGas': return hex(100_000n);
      case 'eth_getTransactionCount': return '0x0';
      case 'eth_getBlockByNumber':
        return { baseFeePerGas: hex(GAS_PRICE), number: '0x1', timestamp: hex(BigInt(NOW_MS / 1000)),
                 hash: '0x' + '11'.repeat(32), transactions: [] };
      default: throw new Error(`not available offline: ${method}`);
    }
  },
});
const client = createClient({ account, chain: tempoModerato, transport });

const CASES = [
  { name: 'tempo-basic', method: tempo.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    input: { amount: '1.5', currency: PATH_USD, decimals: 6, recipient: RECIPIENT, chainId: 42431 } },
  { name: 'tempo-sponsored', method: tempo.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    description: 'Premium weather', meta: { order: '42' },
    input: { amount: '0.25', currency: PATH_USD, decimals: 6, recipient: RECIPIENT, chainId: 42431, feePayer: true,
             externalId: 'order-42', description: 'Premium weather' } },
  { name: 'tempo-splits', method: tempo.Methods.charge, realm: 'shop.example', expires: EXPIRES,
    input: { amount: '10', currency: PATH_USD, decimals: 6, recipient: RECIPIENT, chainId: 42431,
             splits: [{ amount: '1.25', recipient: SPLIT_RECIPIENT }], supportedModes: ['pull'] } },
  { name: 'tempo-zero', method: tempo.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    input: { amount: '0', currency: PATH_USD, decimals: 6, recipient: RECIPIENT, chainId: 42431 } },
  { name: 'tempo-mainnet-default', method: tempo.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    input: { amount: '3', currency: '0x20C000000000000000000000b9537d11c60E8b50', decimals: 6, recipient: RECIPIENT } },
  { name: 'stripe-full', method: stripe.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    description: 'Pro plan',
    input: { amount: '12.34', currency: 'usd', decimals: 2, networkId: 'bn_test_paywire', paymentMethodTypes: ['card'],
             metadata: { plan: 'pro' }, externalId: 'order-9', description: 'Pro plan' } },
  { name: 'stripe-minimal', method: stripe.Methods.charge, realm: 'r.example', expires: EXPIRES,
    input: { amount: '1', currency: 'usd', decimals: 2, networkId: 'bn_test_paywire',
             paymentMethodTypes: ['card', 'link'] } },
  { name: 'evm-basic', method: evm.Methods.charge, realm: 'api.example.com', expires: EXPIRES,
    input: { amount: '0.01', currency: TOKEN, decimals: 6, recipient: RECIPIENT, chainId: 31337 } },
];

const tempoPayer = tempoClient.charge({ account, getClient: async () => client });
const stripePayer = stripeClient.charge({ paymentMethod: 'pm_card_visa',
  createToken: async ({ challenge }) => `spt_paywire_${challenge.request.amount}` });
const evmPayer = evmClient.charge({ account, authorization: { name: 'USD Coin', version: '2' } });

const b64json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const challenges = [];
const credentials = [];
for (const c of CASES) {
  const ch = Challenge.fromMethod(c.method, { secretKey: SECRET, realm: c.realm, expires: c.expires,
    description: c.description, meta: c.meta, request: c.input });
  const header = Challenge.serialize(ch);
  challenges.push({ name: c.name, method: ch.method, intent: ch.intent, realm: ch.realm, expires: ch.expires ?? null,
    description: ch.description ?? null, meta: ch.meta ?? null, opaque_b64: ch.opaque ?? null, input: c.input,
    request: ch.request, id: ch.id, www_authenticate: header });
  let authorization = null;
  if (ch.method === 'tempo' && c.name !== 'tempo-mainnet-default')
    authorization = await tempoPayer.createCredential({ challenge: ch, context: { mode: 'pull' } });
  else if (ch.method === 'tempo')
    authorization = Credential.serialize({ challenge: ch, payload: { hash: '0x' + 'ab'.repeat(32), type: 'hash' },
      source: `did:pkh:eip155:4217:${account.address}` });
  else if (ch.method === 'stripe')
    authorization = await stripePayer.createCredential({ challenge: ch, context: {} });
  else
    authorization = await evmPayer.createCredential({ challenge: ch, context: {} });
  const decoded = b64json(authorization.slice('Payment '.length));
  const entry = { name: c.name, authorization, decoded };
  if (decoded.payload.type === 'transaction') {
    const env = TxEnvelopeTempo.deserialize(decoded.payload.signature);
    entry.transaction = { chain_id: env.chainId, valid_before: env.validBefore ?? null,
      calls: env.calls.map((k) => ({ to: k.to, data: k.data })), fee_payer: env.feePayerSignature === null,
      sign_payload: TxEnvelopeTempo.getSignPayload(env), hash: keccak256(decoded.payload.signature),
      sender: account.address };
  }
  if (decoded.payload.type === 'proof')
    entry.proof_digest = tempo.Proof.hash({ account: account.address, chainId: ch.request.methodDetails.chainId,
      challengeId: ch.id, realm: ch.realm });
  credentials.push(entry);
}

const receipts = [
  { method: 'tempo', reference: '0x' + 'cd'.repeat(32), status: 'success', timestamp: '2030-01-01T00:00:01.000Z' },
  { method: 'stripe', reference: 'pi_3PaywireVectors', status: 'success', timestamp: '2030-01-01T00:00:02.000Z',
    externalId: 'order-9' },
  { method: 'tempo', reference: 'f_N16uIg2VBN8NkR3e97pThdb3aLRjFlN8mh93qBMOc', status: 'success',
    timestamp: '2030-01-01T00:00:03.123Z', challengeId: 'f_N16uIg2VBN8NkR3e97pThdb3aLRjFlN8mh93qBMOc' },
].map((r) => {
  const header = Receipt.serialize(Receipt.from(r));
  return { header, decoded: b64json(header) };
});

const memos = [
  { challengeId: 'abc', serverId: 'api.example.com' },
  { challengeId: 'f_N16uIg2VBN8NkR3e97pThdb3aLRjFlN8mh93qBMOc', serverId: 'shop.example', clientId: 'my-agent' },
  { challengeId: 'x', serverId: 'caf\u00e9' },
].map((m) => ({ ...m, clientId: m.clientId ?? null, memo: Attribution.encode(m) }));

const pkg = (name) => JSON.parse(readFileSync(new URL(`${name}/package.json`, NM), 'utf8')).version;
const data = {
  generator: `mppx ${pkg('mppx')}, viem ${pkg('viem')}, ox ${pkg('ox')}`,
  secret: SECRET,
  now: NOW_MS / 1000,
  payer: account.address,
  challenges,
  credentials,
  receipts,
  attribution_memos: memos,
};
writeFileSync(OUT, JSON.stringify(data, null, 1) + '\n');
console.log(`wrote ${OUT} (${data.generator})`);
