// Parses every LogQL query of the Grafana dashboards (panel targets and annotations) with
// Grafana's own LogQL grammar (@grafana/lezer-logql, what Grafana's query editor uses), since
// no Loki runs here. Usage: node logql.cjs DASHBOARD.json...
// Prints one line per query that does not parse and exits 1 when there is any.
const { readFileSync } = require("node:fs");
const { parser } = require("@grafana/lezer-logql");

function errorAt(query) {
  let at = null;
  parser.parse(query).iterate({
    enter: (node) => {
      if (at === null && node.type.isError) at = node.from;
      return at === null;
    },
  });
  return at;
}

const queries = [];
for (const file of process.argv.slice(2)) {
  const dashboard = JSON.parse(readFileSync(file, "utf8"));
  const panels = (dashboard.panels || []).flatMap((p) => [p, ...(p.panels || [])]);
  for (const panel of panels) {
    for (const target of panel.targets || []) {
      const uid = (target.datasource || panel.datasource || {}).uid;
      if (uid === "loki") queries.push([`${file}: panel '${panel.title}'`, target.expr]);
    }
  }
  for (const ann of (dashboard.annotations || {}).list || []) {
    if ((ann.datasource || {}).uid === "loki") queries.push([`${file}: annotation '${ann.name}'`, ann.expr]);
  }
}
let bad = 0;
for (const [where, query] of queries) {
  // Grafana substitutes variables before Loki sees the query; `All` becomes `.*`.
  const sent = query.replace(/\$service|\$route/g, ".*");
  const at = errorAt(sent);
  if (at !== null) {
    bad += 1;
    console.error(`FAIL: ${where}: LogQL does not parse at offset ${at}: ${sent}`);
  }
}
console.log(`logql: ${queries.length} queries parsed, ${bad} invalid`);
process.exit(bad ? 1 : 0);
