// Parses every LogQL query of the Grafana dashboards (panel targets and annotations) with
// Grafana's own LogQL grammar (@grafana/lezer-logql, what Grafana's query editor uses), since
// no Loki runs here. The queries come with their variables already expanded from each
// dashboard's own definitions, as Grafana sends them:
//   observability.py queries --datasource loki > queries.json && node logql.cjs queries.json
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

const queries = process.argv.slice(2).flatMap((file) => JSON.parse(readFileSync(file, "utf8")));
if (queries.length === 0) {
  console.error("FAIL: no LogQL queries to parse");
  process.exit(1);
}
let bad = 0;
for (const [where, query] of queries) {
  const at = errorAt(query);
  if (at !== null) {
    bad += 1;
    console.error(`FAIL: ${where}: LogQL does not parse at offset ${at}: ${query}`);
  }
}
console.log(`logql: ${queries.length} queries parsed, ${bad} invalid`);
process.exit(bad ? 1 : 0);
