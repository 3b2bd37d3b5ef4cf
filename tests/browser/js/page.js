// The page a front-end developer would write with the published OpenFeature web SDK and
// OFREP web provider, driven by Flagport's browser tests (tests/browser/). Bundled with
// esbuild into ../vendor/openfeature-ofrep-web.js (npm run build); never served in production.
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const DETAILS = {
  boolean: (client, key) => client.getBooleanDetails(key, false),
  string: (client, key) => client.getStringDetails(key, ''),
  number: (client, key) => client.getNumberDetails(key, 0),
  object: (client, key) => client.getObjectDetails(key, {}),
};

window.flagportPage = {
  events: [],
  async start({ baseUrl, context, pollInterval = 0, changeDetection = 'sse', token = null }) {
    for (const type of [
      ProviderEvents.Ready,
      ProviderEvents.ConfigurationChanged,
      ProviderEvents.Stale,
      ProviderEvents.Error,
    ]) {
      OpenFeature.addHandler(type, (details) => {
        this.events.push({
          type,
          flagsChanged: details?.flagsChanged ?? null,
          message: details?.message ?? null,
          at: Date.now(),
        });
      });
    }
    const options = { baseUrl, pollInterval, changeDetection };
    if (token) {
      options.headers = [['Authorization', `Bearer ${token}`]];
    }
    await OpenFeature.setContext(context);
    await OpenFeature.setProviderAndWait(new OFREPWebProvider(options));
    return OpenFeature.getClient().providerStatus;
  },
  status() {
    return OpenFeature.getClient().providerStatus;
  },
  async setContext(context) {
    await OpenFeature.setContext(context);
  },
  // [[key, type], ...] -> {key: {value, variant, reason, errorCode}}
  details(flags) {
    const client = OpenFeature.getClient();
    const out = {};
    for (const [key, type] of flags) {
      const found = DETAILS[type](client, key);
      out[key] = {
        value: found.value,
        variant: found.variant ?? null,
        reason: found.reason ?? null,
        errorCode: found.errorCode ?? null,
      };
    }
    return out;
  },
};
