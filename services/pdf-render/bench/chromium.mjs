// Prints the same proposal HTML to PDF with Debian's chromium through playwright-core, keeping
// one browser warm across documents (as Gotenberg runs it). Prints one JSON line of per-document
// milliseconds. Usage: node chromium.mjs <file.html> <documents>
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

// playwright-core lives in the tools folder (the working directory), not beside this script.
const { chromium } = createRequire(process.cwd() + "/")("playwright-core");

const [file, count] = [process.argv[2], Number(process.argv[3] ?? 20)];
const html = readFileSync(file, "utf8");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext();
const footer = `<div style="font-size:7px;width:100%;padding:0 2.2cm;color:#6e6e6e;display:flex;justify-content:space-between">
  <span>Proposal</span><span>Page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>`;
const options = { format: "A4", printBackground: true, displayHeaderFooter: true, headerTemplate: "<div></div>", footerTemplate: footer,
  margin: { top: "2.6cm", bottom: "2.4cm", left: "2.2cm", right: "2.2cm" } };
// One warm-up document, not measured.
let page = await context.newPage();
await page.setContent(html);
await page.pdf(options);
await page.close();
const ms = [];
let pages = 0;
for (let i = 0; i < count; i++) {
  const started = performance.now();
  page = await context.newPage();
  await page.setContent(html);
  const pdf = await page.pdf(options);
  await page.close();
  ms.push(performance.now() - started);
  pages = (pdf.toString("latin1").match(/\/Type\s*\/Page[^s]/g) ?? []).length;
}
await browser.close();
console.log(JSON.stringify({ ms, pages }));
