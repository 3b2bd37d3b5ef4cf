// The Unleash Proxy (@unleash/proxy) with bootstrapped toggles and no upstream Unleash
// (benchmarks/test_peers.py). Usage: node unleash_proxy.js PORT FEATURES.json CLIENT_KEY
// The upstream URL is required by its configuration but never contacted: polling is off
// (a negative refreshInterval), metrics are off, the toggles come from expBootstrap.
"use strict";
const fs = require("node:fs");
const { createApp } = require("@unleash/proxy/dist/app");
const { createProxyConfig } = require("@unleash/proxy/dist/config");
const { createNewClient } = require("@unleash/proxy/dist/create-client");
const { InMemStorageProvider } = require("unleash-client");

const port = Number(process.argv[2]);
const features = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
const options = {
  unleashUrl: "http://127.0.0.1:9/api/",
  unleashApiToken: "unused",
  clientKeys: [process.argv[4]],
  refreshInterval: -1,
  metricsInterval: -1,
  disableMetrics: true,
  expBootstrap: { data: features },
  storageProvider: new InMemStorageProvider(),
  enableAllEndpoint: true,
  logLevel: "error",
};
const config = createProxyConfig(options);
config.disableMetrics = true;
const app = createApp(options, createNewClient(config));
app.listen(port, "127.0.0.1");
