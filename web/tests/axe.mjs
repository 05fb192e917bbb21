// axe-core for the browser tests: one audit, the same bar everywhere (no serious or critical
// violation), minor ones counted in the report.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** axe-core on `page` as it is now; throws on a serious or critical violation. */
export async function audit(page, label) {
  await page.addScriptTag({ content: axeSource });
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    const detail = bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')}`);
    throw new Error(`${label}: ${detail.join('; ')}`);
  }
  return `${label} ${r.violations.length} minor`;
}
