// Screenshots of Prometheus graphs (headless Debian Chromium driven by
// playwright-core, as web/tests does) into artifacts/monitoring/.
//
//   node deploy/monitoring/screenshots.mjs [PROMETHEUS_URL]   (default http://127.0.0.1:9090)
//
// deploy/monitoring/screenshots.sh runs it during a load run.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const require = createRequire(path.join(root, 'web/tests/package.json'));
const { chromium } = require('playwright-core');

const prometheus = process.argv[2] ?? 'http://127.0.0.1:9090';
const out = path.join(root, 'artifacts', 'monitoring');
mkdirSync(out, { recursive: true });

// One graph per file: what an operator looks at first.
const graphs = [
  ['delivery-delay-by-transport', 'histogram_quantile(0.99, sum by (le, transport) (rate(qrlogin_edge_delivery_delay_seconds_bucket[1m])))'],
  ['delivery-delay-p50-p99', 'histogram_quantile(0.5, sum by (le) (rate(qrlogin_edge_delivery_delay_seconds_bucket[1m]))) or histogram_quantile(0.99, sum by (le) (rate(qrlogin_edge_delivery_delay_seconds_bucket[1m])))'],
  ['snapshots-by-transport', 'sum by (transport) (rate(qrlogin_edge_events_delivered_total[1m]))'],
  ['connections-by-transport', 'sum by (transport) (qrlogin_edge_connections)'],
  ['auth-transitions', 'sum by (action, outcome) (rate(qrlogin_auth_transitions_total[1m]))'],
  ['auth-kv-latency-p99', 'histogram_quantile(0.99, sum by (le) (rate(qrlogin_auth_kv_write_duration_seconds_bucket{result="committed"}[1m])))'],
  ['auth-calls-by-code', 'sum by (method, code) (rate(qrlogin_auth_calls_total[1m]))'],
  ['cas-retries', 'sum by (action) (rate(qrlogin_auth_cas_retries_total[1m]))'],
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  for (const [name, expr] of graphs) {
    const q = new URLSearchParams({ 'g0.expr': expr, 'g0.tab': '0', 'g0.range_input': '5m' });
    await page.goto(`${prometheus}/graph?${q}`, { waitUntil: 'networkidle' });
    // The chart is drawn once the query answered (Debian's build serves
    // the classic UI: a Rickshaw SVG; the React UI draws on a canvas).
    await page.waitForSelector('.rickshaw_graph svg, .graph-chart canvas', { timeout: 15000 });
    await page.waitForTimeout(500);
    const file = path.join(out, `${name}.png`);
    await page.screenshot({ path: file, fullPage: false });
    console.log(`wrote ${path.relative(root, file)}`);
  }
  await page.goto(`${prometheus}/alerts`, { waitUntil: 'networkidle' });
  await page.screenshot({ path: path.join(out, 'alerts.png'), fullPage: true });
  console.log('wrote artifacts/monitoring/alerts.png');
} finally {
  await browser.close();
}
