// The published OpenFeature web SDK and OFREP web provider, as a front-end developer would
// import them, exposed on `window` for the browser tests (tests/browser/).
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

window.OpenFeature = OpenFeature;
window.ProviderEvents = ProviderEvents;
window.OFREPWebProvider = OFREPWebProvider;
