// Build the console into dist/: generate the TypeScript from proto/ (buf + protoc-gen-es),
// type-check, bundle with esbuild, copy the page and its stylesheet.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

const bin = (name) => new URL(`node_modules/.bin/${name}`, import.meta.url).pathname;
const here = new URL(".", import.meta.url).pathname;
const run = (cmd, args) => execFileSync(cmd, args, { cwd: here, stdio: "inherit" });

run(bin("buf"), ["generate"]);
run(bin("tsc"), ["--noEmit", "-p", "."]);
rmSync(`${here}dist`, { recursive: true, force: true });
mkdirSync(`${here}dist`);
await build({
  entryPoints: [`${here}src/main.ts`],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  outfile: `${here}dist/app.js`,
  logLevel: "warning",
});
copyFileSync(`${here}index.html`, `${here}dist/index.html`);
copyFileSync(`${here}style.css`, `${here}dist/style.css`);
