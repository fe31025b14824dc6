// Builds the page into one file, dist/index.html: src/index.html with the bundled script
// (src/app.js + uPlot, minified by esbuild) and the styles (uPlot's + src/app.css) inline.
// The query function embeds that file at compile time (functions/query/src/main.rs), so
// the page needs no CDN, no second request and no upload step.
//
//   node build.mjs           write dist/index.html and print its sizes
//   node build.mjs --check   fail if dist/index.html is not what the sources build, or if
//                            script + style exceed the 150 KB gzip budget
// dist/ is committed so a clone builds the functions with Rust alone; the check (run by
// tests/tests/web_bundle.rs in `cargo xtask test`) keeps it in step with src/.
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const BUDGET = 150 * 1024;

const result = await build({
  entryPoints: [join(here, "src/app.js")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  write: false,
  legalComments: "inline",
  logLevel: "warning",
});
const script = result.outputFiles[0].text.replace(/<\/script/gi, "<\\/script");
const style = [
  readFileSync(join(here, "node_modules/uplot/dist/uPlot.min.css"), "utf8"),
  readFileSync(join(here, "src/app.css"), "utf8"),
].join("\n");
const template = readFileSync(join(here, "src/index.html"), "utf8");
const page = template
  .replace("<!--STYLE-->", () => `<style>\n${style}</style>`)
  .replace("<!--SCRIPT-->", () => `<script>\n${script}</script>`);

const gz = (text) => gzipSync(Buffer.from(text), { level: 9 }).length;
const assets = gz(script) + gz(style);
const report = `script ${script.length} B (${gz(script)} B gzip), style ${style.length} B (${gz(style)} B gzip), ` +
  `page ${page.length} B (${gz(page)} B gzip); JS + CSS ${assets} B gzip of a ${BUDGET} B budget`;

const out = join(here, "dist/index.html");
if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch (_) {}
  console.log(report);
  if (committed !== page) {
    console.error("web/dist/index.html is not what web/src builds: run `npm run build` in web/ and commit dist/");
    process.exit(1);
  }
  if (assets > BUDGET) {
    console.error(`JS + CSS are ${assets} B gzip, over the ${BUDGET} B budget`);
    process.exit(1);
  }
} else {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, page);
  console.log(report);
}
