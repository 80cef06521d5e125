// Parses every LogQL query of the Grafana dashboards (panel targets and annotations) and Tempo's
// trace-to-logs query with Grafana's own LogQL grammar (@grafana/lezer-logql, what Grafana's
// query editor uses), since no Loki runs here. The queries come with their variables already
// expanded from each dashboard's own definitions, as Grafana sends them:
//   observability.py queries --datasource loki > queries.json && node logql.cjs queries.json
// Prints one line per query that does not parse and exits 1 when there is any.
//
// Structured metadata (what Loki keeps of an OTLP record besides its stream labels and line:
// severity_text, trace_id, scope_name, the event's fields) is filtered with an ordinary label
// filter placed straight after the selector, no parser first; the grammar has no separate rule
// for it. The self-test below pins that down: such filters must parse as LabelFilter stages, and
// broken queries must not parse, or a pass here would prove nothing.
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

// Names of the label filters of a query, in order (`| a="x" or b=~"y"` gives a, b).
function labelFilterNames(query) {
  const names = [];
  parser.parse(query).iterate({
    enter: (node) => {
      if (node.name === "Matcher" && node.node.parent && node.node.parent.name === "LabelFilter") {
        const id = node.node.getChild("Identifier");
        if (id) names.push(query.slice(id.from, id.to));
      }
    },
  });
  return names;
}

function selfTest() {
  const failures = [];
  const readable = [
    ['{service_name="shop"} | severity_text=~"WARN|ERROR" | scope_name=~"sqlx::.*|shop::db" or error=~"(?i).*database.*"',
      ["severity_text", "scope_name", "error"]],
    ['{service_name="shop"} | trace_id="4bf92f3577b34da6a3ce929d0e0e4736"', ["trace_id"]],
    ['{service_name=~".*"} |= "config changed" | line_format "{{.actor}} ({{.role}}): {{.changes}}"', []],
  ];
  for (const [query, names] of readable) {
    const at = errorAt(query);
    const got = labelFilterNames(query);
    if (at !== null || JSON.stringify(got) !== JSON.stringify(names)) {
      failures.push(`grammar self-test: expected label filters ${JSON.stringify(names)} without error, got ` +
        `${JSON.stringify(got)} (error at ${at}): ${query}`);
    }
  }
  for (const query of ['{service_name="shop"} | severity_text=~', '{service_name="shop"} | trace_id="x" |',
    '{service_name="shop" | severity_text="WARN"']) {
    if (errorAt(query) === null) failures.push(`grammar self-test: a broken query parses: ${query}`);
  }
  return failures;
}

const selfTestFailures = selfTest();
for (const failure of selfTestFailures) console.error(`FAIL: ${failure}`);

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
console.log(`logql: ${queries.length} queries parsed, ${bad} invalid; grammar self-test ` +
  `${selfTestFailures.length ? "failed" : "passed"}`);
process.exit(bad || selfTestFailures.length ? 1 : 0);
