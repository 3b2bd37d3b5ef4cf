// A bare node:http server around the GrowthBook SDK: the floor a hand-written evaluation
// service in Node reaches (benchmarks/test_peers.py). Usage: node growthbook_server.js PORT FEATURES.json
// GET /flags/KEY?targetingKey=U&...   POST /flags/KEY {"context":{...}}   POST /flags {"context":{...}}
// Answers are shaped like OFREP's ({key, value, reason, variant}; the bulk {flags: [...]}), so
// the bytes on the wire are comparable with Flagport's.
"use strict";
const http = require("node:http");
const fs = require("node:fs");
const { GrowthBookClient } = require("@growthbook/growthbook");

const port = Number(process.argv[2]);
const features = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const client = new GrowthBookClient().initSync({ payload: { features } });
const keys = Object.keys(features);

function attributes(context) {
  const { targetingKey, ...rest } = context || {};
  return { id: targetingKey, ...rest };
}

function answer(key, userContext) {
  const result = client.evalFeature(key, userContext);
  return {
    key,
    value: result.value === null ? false : result.value,
    reason: result.source === "force" ? "TARGETING_MATCH" : "DEFAULT",
    variant: result.on ? "on" : "off",
  };
}

function send(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  response.end(text);
}

const server = http.createServer((request, response) => {
  const url = new URL(request.url, "http://localhost");
  const key = url.pathname.startsWith("/flags/") ? decodeURIComponent(url.pathname.slice(7)) : null;
  if (request.method === "GET") {
    if (url.pathname === "/health") return send(response, 200, { ok: true });
    if (key === null) return send(response, 404, { error: "not found" });
    const context = Object.fromEntries(url.searchParams);
    return send(response, 200, answer(key, { attributes: attributes(context) }));
  }
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    let context;
    try {
      context = JSON.parse(Buffer.concat(chunks).toString("utf8")).context;
    } catch (error) {
      return send(response, 400, { error: "invalid JSON" });
    }
    const userContext = { attributes: attributes(context) };
    if (key !== null) return send(response, 200, answer(key, userContext));
    if (url.pathname === "/flags") {
      return send(response, 200, { flags: keys.map((k) => answer(k, userContext)) });
    }
    return send(response, 404, { error: "not found" });
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, "127.0.0.1");
