// Builds the experiment page into dist/ (served by `drawgap clickme serve`): jsPsych's browser builds from
// node_modules (installed by `npm ci`) plus this directory's src/. Written to a temporary directory first and
// renamed, so the server never sees half a page.
import { cpSync, existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");
const staging = join(here, ".dist-building");
const vendor = {
  "jspsych.js": "node_modules/jspsych/dist/index.browser.min.js",
  "jspsych.css": "node_modules/jspsych/css/jspsych.css",
  "plugin-html-button-response.js": "node_modules/@jspsych/plugin-html-button-response/dist/index.browser.min.js",
  "plugin-instructions.js": "node_modules/@jspsych/plugin-instructions/dist/index.browser.min.js",
  "plugin-call-function.js": "node_modules/@jspsych/plugin-call-function/dist/index.browser.min.js",
};

rmSync(staging, { recursive: true, force: true });
mkdirSync(join(staging, "vendor"), { recursive: true });
for (const [name, source] of Object.entries(vendor)) {
  const from = join(here, source);
  if (!existsSync(from)) {
    console.error(`missing ${source}: run \`npm ci\` in ${here} first`);
    process.exit(1);
  }
  cpSync(from, join(staging, "vendor", name));
}
cpSync(join(here, "src"), staging, { recursive: true });
rmSync(out, { recursive: true, force: true });
renameSync(staging, out);
console.log(`built ${out}`);
