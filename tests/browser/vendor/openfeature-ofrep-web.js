// node_modules/@openfeature/core/dist/esm/index.js
var __defProp = Object.defineProperty;
var __defProps = Object.defineProperties;
var __getOwnPropDescs = Object.getOwnPropertyDescriptors;
var __getOwnPropSymbols = Object.getOwnPropertySymbols;
var __hasOwnProp = Object.prototype.hasOwnProperty;
var __propIsEnum = Object.prototype.propertyIsEnumerable;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __spreadValues = (a, b) => {
  for (var prop in b || (b = {}))
    if (__hasOwnProp.call(b, prop))
      __defNormalProp(a, prop, b[prop]);
  if (__getOwnPropSymbols)
    for (var prop of __getOwnPropSymbols(b)) {
      if (__propIsEnum.call(b, prop))
        __defNormalProp(a, prop, b[prop]);
    }
  return a;
};
var __spreadProps = (a, b) => __defProps(a, __getOwnPropDescs(b));
var __async = (__this, __arguments, generator) => {
  return new Promise((resolve, reject) => {
    var fulfilled = (value) => {
      try {
        step(generator.next(value));
      } catch (e) {
        reject(e);
      }
    };
    var rejected = (value) => {
      try {
        step(generator.throw(value));
      } catch (e) {
        reject(e);
      }
    };
    var step = (x) => x.done ? resolve(x.value) : Promise.resolve(x.value).then(fulfilled, rejected);
    step((generator = generator.apply(__this, __arguments)).next());
  });
};
var MapHookData = class {
  constructor() {
    this.data = /* @__PURE__ */ new Map();
  }
  set(key, value) {
    this.data.set(key, value);
  }
  get(key) {
    return this.data.get(key);
  }
  has(key) {
    return this.data.has(key);
  }
  delete(key) {
    return this.data.delete(key);
  }
  clear() {
    this.data.clear();
  }
};
var StandardResolutionReasons = {
  /**
   * The resolved value is static (no dynamic evaluation).
   */
  STATIC: "STATIC",
  /**
   *  The resolved value was configured statically, or otherwise fell back to a pre-configured value.
   */
  DEFAULT: "DEFAULT",
  /**
   * The resolved value was the result of a dynamic evaluation, such as a rule or specific user-targeting.
   */
  TARGETING_MATCH: "TARGETING_MATCH",
  /**
   * The resolved value was the result of pseudorandom assignment.
   */
  SPLIT: "SPLIT",
  /**
   * The resolved value was retrieved from cache.
   */
  CACHED: "CACHED",
  /**
   * The resolved value was the result of the flag being disabled in the management system.
   */
  DISABLED: "DISABLED",
  /**
   * The reason for the resolved value could not be determined.
   */
  UNKNOWN: "UNKNOWN",
  /**
   * The resolved value is non-authoritative or possibly out of date.
   */
  STALE: "STALE",
  /**
   * The resolved value was the result of an error.
   *
   * Note: The `errorCode` and `errorMessage` fields may contain additional details of this error.
   */
  ERROR: "ERROR"
};
var ErrorCode = /* @__PURE__ */ ((ErrorCode2) => {
  ErrorCode2["PROVIDER_NOT_READY"] = "PROVIDER_NOT_READY";
  ErrorCode2["PROVIDER_FATAL"] = "PROVIDER_FATAL";
  ErrorCode2["FLAG_NOT_FOUND"] = "FLAG_NOT_FOUND";
  ErrorCode2["PARSE_ERROR"] = "PARSE_ERROR";
  ErrorCode2["TYPE_MISMATCH"] = "TYPE_MISMATCH";
  ErrorCode2["TARGETING_KEY_MISSING"] = "TARGETING_KEY_MISSING";
  ErrorCode2["INVALID_CONTEXT"] = "INVALID_CONTEXT";
  ErrorCode2["GENERAL"] = "GENERAL";
  return ErrorCode2;
})(ErrorCode || {});
var OpenFeatureError = class _OpenFeatureError extends Error {
  constructor(message, options) {
    super(message);
    Object.setPrototypeOf(this, _OpenFeatureError.prototype);
    this.name = "OpenFeatureError";
    this.cause = options == null ? void 0 : options.cause;
  }
};
var FlagNotFoundError = class _FlagNotFoundError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _FlagNotFoundError.prototype);
    this.name = "FlagNotFoundError";
    this.code = "FLAG_NOT_FOUND";
  }
};
var GeneralError = class _GeneralError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _GeneralError.prototype);
    this.name = "GeneralError";
    this.code = "GENERAL";
  }
};
var InvalidContextError = class _InvalidContextError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _InvalidContextError.prototype);
    this.name = "InvalidContextError";
    this.code = "INVALID_CONTEXT";
  }
};
var ParseError = class _ParseError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _ParseError.prototype);
    this.name = "ParseError";
    this.code = "PARSE_ERROR";
  }
};
var ProviderFatalError = class _ProviderFatalError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _ProviderFatalError.prototype);
    this.name = "ProviderFatalError";
    this.code = "PROVIDER_FATAL";
  }
};
var ProviderNotReadyError = class _ProviderNotReadyError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _ProviderNotReadyError.prototype);
    this.name = "ProviderNotReadyError";
    this.code = "PROVIDER_NOT_READY";
  }
};
var TargetingKeyMissingError = class _TargetingKeyMissingError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _TargetingKeyMissingError.prototype);
    this.name = "TargetingKeyMissingError";
    this.code = "TARGETING_KEY_MISSING";
  }
};
var TypeMismatchError = class _TypeMismatchError extends OpenFeatureError {
  constructor(message, options) {
    super(message, options);
    Object.setPrototypeOf(this, _TypeMismatchError.prototype);
    this.name = "TypeMismatchError";
    this.code = "TYPE_MISMATCH";
  }
};
var instantiateErrorByErrorCode = (errorCode, message) => {
  switch (errorCode) {
    case "FLAG_NOT_FOUND":
      return new FlagNotFoundError(message);
    case "PARSE_ERROR":
      return new ParseError(message);
    case "TYPE_MISMATCH":
      return new TypeMismatchError(message);
    case "TARGETING_KEY_MISSING":
      return new TargetingKeyMissingError(message);
    case "INVALID_CONTEXT":
      return new InvalidContextError(message);
    case "PROVIDER_NOT_READY":
      return new ProviderNotReadyError(message);
    case "PROVIDER_FATAL":
      return new ProviderFatalError(message);
    default:
      return new GeneralError(message);
  }
};
var ClientProviderStatus = /* @__PURE__ */ ((ClientProviderStatus2) => {
  ClientProviderStatus2["NOT_READY"] = "NOT_READY";
  ClientProviderStatus2["READY"] = "READY";
  ClientProviderStatus2["ERROR"] = "ERROR";
  ClientProviderStatus2["STALE"] = "STALE";
  ClientProviderStatus2["FATAL"] = "FATAL";
  ClientProviderStatus2["RECONCILING"] = "RECONCILING";
  return ClientProviderStatus2;
})(ClientProviderStatus || {});
var ClientProviderEvents = /* @__PURE__ */ ((ClientProviderEvents2) => {
  ClientProviderEvents2["Ready"] = "PROVIDER_READY";
  ClientProviderEvents2["Error"] = "PROVIDER_ERROR";
  ClientProviderEvents2["ConfigurationChanged"] = "PROVIDER_CONFIGURATION_CHANGED";
  ClientProviderEvents2["ContextChanged"] = "PROVIDER_CONTEXT_CHANGED";
  ClientProviderEvents2["Reconciling"] = "PROVIDER_RECONCILING";
  ClientProviderEvents2["Stale"] = "PROVIDER_STALE";
  return ClientProviderEvents2;
})(ClientProviderEvents || {});
var eventStatusMap = {
  [
    "READY"
    /* READY */
  ]: "PROVIDER_READY",
  [
    "ERROR"
    /* ERROR */
  ]: "PROVIDER_ERROR",
  [
    "FATAL"
    /* FATAL */
  ]: "PROVIDER_ERROR",
  [
    "STALE"
    /* STALE */
  ]: "PROVIDER_STALE",
  [
    "RECONCILING"
    /* RECONCILING */
  ]: "PROVIDER_RECONCILING",
  [
    "NOT_READY"
    /* NOT_READY */
  ]: void 0
};
var statusMatchesEvent = (event, status) => {
  return !status && event === "PROVIDER_READY" || eventStatusMap[status] === event;
};
var DefaultLogger = class {
  error(...args) {
    console.error(...args);
  }
  warn(...args) {
    console.warn(...args);
  }
  info() {
  }
  debug() {
  }
};
var LOG_LEVELS = ["error", "warn", "info", "debug"];
var SafeLogger = class {
  constructor(logger) {
    this.fallbackLogger = new DefaultLogger();
    try {
      for (const level of LOG_LEVELS) {
        if (!logger[level] || typeof logger[level] !== "function") {
          throw new Error(`The provided logger is missing the ${level} method.`);
        }
      }
      this.logger = logger;
    } catch (err) {
      console.error(err);
      console.error("Falling back to the default logger.");
      this.logger = this.fallbackLogger;
    }
  }
  error(...args) {
    this.log("error", ...args);
  }
  warn(...args) {
    this.log("warn", ...args);
  }
  info(...args) {
    this.log("info", ...args);
  }
  debug(...args) {
    this.log("debug", ...args);
  }
  log(level, ...args) {
    try {
      this.logger[level](...args);
    } catch (error) {
      this.fallbackLogger[level](...args);
    }
  }
};
var GenericEventEmitter = class {
  constructor(globalLogger) {
    this.globalLogger = globalLogger;
    this._handlers = {
      [
        "PROVIDER_CONFIGURATION_CHANGED"
        /* ConfigurationChanged */
      ]: /* @__PURE__ */ new WeakMap(),
      [
        "PROVIDER_CONTEXT_CHANGED"
        /* ContextChanged */
      ]: /* @__PURE__ */ new WeakMap(),
      [
        "PROVIDER_READY"
        /* Ready */
      ]: /* @__PURE__ */ new WeakMap(),
      [
        "PROVIDER_ERROR"
        /* Error */
      ]: /* @__PURE__ */ new WeakMap(),
      [
        "PROVIDER_STALE"
        /* Stale */
      ]: /* @__PURE__ */ new WeakMap(),
      [
        "PROVIDER_RECONCILING"
        /* Reconciling */
      ]: /* @__PURE__ */ new WeakMap()
    };
  }
  // here we use E, to restrict the events a provider can manually emit (PROVIDER_CONTEXT_CHANGED is emitted by the SDK)
  emit(eventType, context) {
    this.eventEmitter.emit(eventType, context);
  }
  addHandler(eventType, handler) {
    const asyncHandler = (details) => __async(this, null, function* () {
      var _a;
      try {
        yield handler(details);
      } catch (err) {
        (_a = this._logger) == null ? void 0 : _a.error("Error running event handler:", err);
      }
    });
    const existingAsyncHandlers = this._handlers[eventType].get(handler);
    this._handlers[eventType].set(handler, [...existingAsyncHandlers || [], asyncHandler]);
    this.eventEmitter.on(eventType, asyncHandler);
  }
  removeHandler(eventType, handler) {
    const existingAsyncHandlers = this._handlers[eventType].get(handler);
    if (existingAsyncHandlers) {
      const removedAsyncHandler = existingAsyncHandlers.pop();
      if (removedAsyncHandler) {
        this.eventEmitter.removeListener(eventType, removedAsyncHandler);
      }
    }
  }
  removeAllHandlers(eventType) {
    if (eventType) {
      this.eventEmitter.removeAllListeners(eventType);
    } else {
      this.eventEmitter.removeAllListeners();
    }
  }
  getHandlers(eventType) {
    return this.eventEmitter.listeners(eventType);
  }
  setLogger(logger) {
    this._eventLogger = new SafeLogger(logger);
    return this;
  }
  get _logger() {
    var _a, _b;
    return (_b = this._eventLogger) != null ? _b : (_a = this.globalLogger) == null ? void 0 : _a.call(this);
  }
};
function isString(value) {
  return typeof value === "string";
}
function stringOrUndefined(value) {
  return isString(value) ? value : void 0;
}
function isObject(value) {
  return typeof value === "object";
}
function objectOrUndefined(value) {
  return isObject(value) ? value : void 0;
}
function isDefined(input) {
  return typeof input !== "undefined" && input !== null;
}
var ProviderWrapper = class {
  constructor(_provider, _status, _statusEnumType) {
    this._provider = _provider;
    this._status = _status;
    this._pendingContextChanges = 0;
    var _a, _b, _c;
    (_a = _provider.events) == null ? void 0 : _a.addHandler("PROVIDER_READY", () => {
      this._status = _statusEnumType.READY;
    });
    (_b = _provider.events) == null ? void 0 : _b.addHandler("PROVIDER_STALE", () => {
      this._status = _statusEnumType.STALE;
    });
    (_c = _provider.events) == null ? void 0 : _c.addHandler("PROVIDER_ERROR", (details) => {
      if ((details == null ? void 0 : details.errorCode) === "PROVIDER_FATAL") {
        this._status = _statusEnumType.FATAL;
      } else {
        this._status = _statusEnumType.ERROR;
      }
    });
  }
  get provider() {
    return this._provider;
  }
  set provider(provider) {
    this._provider = provider;
  }
  get status() {
    return this._status;
  }
  set status(status) {
    this._status = status;
  }
  get allContextChangesSettled() {
    return this._pendingContextChanges === 0;
  }
  incrementPendingContextChanges() {
    this._pendingContextChanges++;
  }
  decrementPendingContextChanges() {
    this._pendingContextChanges--;
  }
};
var OpenFeatureCommonAPI = class {
  constructor(category) {
    this._hooks = [];
    this._context = {};
    this._logger = new DefaultLogger();
    this._clientEventHandlers = /* @__PURE__ */ new Map();
    this._domainScopedContext = /* @__PURE__ */ new Map();
    this._clientEvents = /* @__PURE__ */ new Map();
    this._runsOn = category;
  }
  addHooks(...hooks) {
    this._hooks = [...this._hooks, ...hooks];
    return this;
  }
  getHooks() {
    return this._hooks;
  }
  clearHooks() {
    this._hooks = [];
    return this;
  }
  setLogger(logger) {
    this._logger = new SafeLogger(logger);
    return this;
  }
  /**
   * Get metadata about the default provider.
   * @returns {ProviderMetadata} Provider Metadata
   */
  get providerMetadata() {
    return this.getProviderMetadata();
  }
  /**
   * Get metadata about a registered provider using the client name.
   * An unbound or empty client name will return metadata from the default provider.
   * @param {string} domain An identifier which logically binds clients with providers
   * @returns {ProviderMetadata} Provider Metadata
   */
  getProviderMetadata(domain) {
    return this.getProviderForClient(domain).metadata;
  }
  /**
   * Adds a handler for the given provider event type.
   * The handlers are called in the order they have been added.
   * API (global) events run for all providers.
   * @param {AnyProviderEvent} eventType The provider event type to listen to
   * @param {EventHandler} handler The handler to run on occurrence of the event type
   * @param {EventOptions} options Optional options such as signal for aborting
   */
  addHandler(eventType, handler, options) {
    [.../* @__PURE__ */ new Map([[void 0, this._defaultProvider]]), ...this._domainScopedProviders].forEach((keyProviderTuple) => {
      var _a;
      const domain = keyProviderTuple[0];
      const provider = keyProviderTuple[1].provider;
      const status = keyProviderTuple[1].status;
      const shouldRunNow = statusMatchesEvent(eventType, status);
      if (shouldRunNow) {
        try {
          handler({ domain, providerName: provider.metadata.name });
        } catch (err) {
          (_a = this._logger) == null ? void 0 : _a.error("Error running event handler:", err);
        }
      }
    });
    this._apiEmitter.addHandler(eventType, handler);
    if ((options == null ? void 0 : options.signal) && typeof options.signal.addEventListener === "function") {
      options.signal.addEventListener("abort", () => {
        this.removeHandler(eventType, handler);
      });
    }
  }
  /**
   * Removes a handler for the given provider event type.
   * @param {AnyProviderEvent} eventType The provider event type to remove the listener for
   * @param {EventHandler} handler The handler to remove for the provider event type
   */
  removeHandler(eventType, handler) {
    this._apiEmitter.removeHandler(eventType, handler);
  }
  /**
   * Removes all event handlers.
   */
  clearHandlers() {
    this._apiEmitter.removeAllHandlers();
  }
  /**
   * Gets the current handlers for the given provider event type.
   * @param {AnyProviderEvent} eventType The provider event type to get the current handlers for
   * @returns {EventHandler[]} The handlers currently attached to the given provider event type
   */
  getHandlers(eventType) {
    return this._apiEmitter.getHandlers(eventType);
  }
  setAwaitableProvider(domainOrProvider, providerOrUndefined) {
    var _a, _b, _c, _d, _e, _f, _g, _h;
    const domain = stringOrUndefined(domainOrProvider);
    const provider = (_a = objectOrUndefined(domainOrProvider)) != null ? _a : objectOrUndefined(providerOrUndefined);
    if (!provider) {
      this._logger.debug("No provider defined, ignoring setProvider call");
      return;
    }
    const oldProvider = this.getProviderForClient(domain);
    const providerName = provider.metadata.name;
    this.assertDomainScopedBindingAllowed(provider, domain);
    if (oldProvider === provider) {
      this._logger.debug("Provider is already set, ignoring setProvider call");
      return;
    }
    if (!provider.runsOn) {
      this._logger.debug(`Provider '${provider.metadata.name}' has not defined its intended use.`);
    } else if (provider.runsOn !== this._runsOn) {
      throw new GeneralError(`Provider '${provider.metadata.name}' is intended for use on the ${provider.runsOn}.`);
    }
    const emitters = this.getAssociatedEventEmitters(domain);
    let initializationPromise = void 0;
    const wrappedProvider = new ProviderWrapper(
      provider,
      this._statusEnumType.NOT_READY,
      this._statusEnumType
    );
    if (typeof provider.initialize === "function" && !this.allProviders.includes(provider)) {
      const initContext = domain ? (_b = this._domainScopedContext.get(domain)) != null ? _b : this._context : this._context;
      initializationPromise = (_e = (_d = (_c = provider.initialize) == null ? void 0 : _c.call(provider, initContext, domain)) == null ? void 0 : _d.then(() => {
        var _a2;
        wrappedProvider.status = this._statusEnumType.READY;
        this.getAssociatedEventEmitters(domain).forEach((emitter) => {
          emitter == null ? void 0 : emitter.emit("PROVIDER_READY", { clientName: domain, domain, providerName });
        });
        (_a2 = this._apiEmitter) == null ? void 0 : _a2.emit("PROVIDER_READY", { clientName: domain, domain, providerName });
      })) == null ? void 0 : _e.catch((error) => {
        var _a2;
        if ((error == null ? void 0 : error.code) === "PROVIDER_FATAL") {
          wrappedProvider.status = this._statusEnumType.FATAL;
        } else {
          wrappedProvider.status = this._statusEnumType.ERROR;
        }
        this.getAssociatedEventEmitters(domain).forEach((emitter) => {
          emitter == null ? void 0 : emitter.emit("PROVIDER_ERROR", {
            clientName: domain,
            domain,
            providerName,
            message: error == null ? void 0 : error.message
          });
        });
        (_a2 = this._apiEmitter) == null ? void 0 : _a2.emit("PROVIDER_ERROR", {
          clientName: domain,
          domain,
          providerName,
          message: error == null ? void 0 : error.message
        });
        throw error;
      });
    } else {
      wrappedProvider.status = this._statusEnumType.READY;
      emitters.forEach((emitter) => {
        emitter == null ? void 0 : emitter.emit("PROVIDER_READY", { clientName: domain, domain, providerName });
      });
      (_f = this._apiEmitter) == null ? void 0 : _f.emit("PROVIDER_READY", { clientName: domain, domain, providerName });
    }
    if (domain) {
      this._domainScopedProviders.set(domain, wrappedProvider);
    } else {
      this._defaultProvider = wrappedProvider;
    }
    this.transferListeners(oldProvider, provider, domain, emitters);
    if (!this.allProviders.includes(oldProvider)) {
      (_h = (_g = oldProvider == null ? void 0 : oldProvider.onClose) == null ? void 0 : _g.call(oldProvider)) == null ? void 0 : _h.catch((err) => {
        this._logger.error(`error closing provider: ${err == null ? void 0 : err.message}, ${err == null ? void 0 : err.stack}`);
      });
    }
    return initializationPromise;
  }
  getProviderForClient(domain) {
    var _a, _b;
    if (!domain) {
      return this._defaultProvider.provider;
    }
    return (_b = (_a = this._domainScopedProviders.get(domain)) == null ? void 0 : _a.provider) != null ? _b : this._defaultProvider.provider;
  }
  buildAndCacheEventEmitterForClient(domain) {
    const emitter = this._clientEvents.get(domain);
    if (emitter) {
      return emitter;
    }
    const newEmitter = this._createEventEmitter();
    this._clientEvents.set(domain, newEmitter);
    const clientProvider = this.getProviderForClient(domain);
    Object.values(ClientProviderEvents).forEach(
      (eventType) => {
        var _a;
        return (_a = clientProvider.events) == null ? void 0 : _a.addHandler(eventType, (details) => __async(this, null, function* () {
          newEmitter.emit(eventType, __spreadProps(__spreadValues({}, details), {
            clientName: domain,
            domain,
            providerName: clientProvider.metadata.name
          }));
        }));
      }
    );
    return newEmitter;
  }
  getUnboundEmitters() {
    const domainScopedProviders = [...this._domainScopedProviders.keys()];
    const eventEmitterNames = [...this._clientEvents.keys()].filter(isDefined);
    const unboundEmitterNames = eventEmitterNames.filter((name) => !domainScopedProviders.includes(name));
    return [
      // all unbound, named emitters
      ...unboundEmitterNames.map((name) => this._clientEvents.get(name)),
      // the default emitter
      this._clientEvents.get(void 0)
    ].filter(isDefined);
  }
  getAssociatedEventEmitters(domain) {
    return domain ? [this.buildAndCacheEventEmitterForClient(domain)] : this.getUnboundEmitters();
  }
  transferListeners(oldProvider, newProvider, domain, emitters) {
    var _a;
    (_a = this._clientEventHandlers.get(domain)) == null ? void 0 : _a.forEach((eventHandler) => {
      var _a2;
      return (_a2 = oldProvider.events) == null ? void 0 : _a2.removeHandler(...eventHandler);
    });
    const newClientHandlers = Object.values(ClientProviderEvents).map((eventType) => {
      const handler = (details) => __async(this, null, function* () {
        emitters.forEach((emitter) => {
          emitter == null ? void 0 : emitter.emit(eventType, __spreadProps(__spreadValues({}, details), { clientName: domain, domain, providerName: newProvider.metadata.name }));
        });
        this._apiEmitter.emit(eventType, __spreadProps(__spreadValues({}, details), {
          clientName: domain,
          domain,
          providerName: newProvider.metadata.name
        }));
      });
      return [eventType, handler];
    });
    this._clientEventHandlers.set(domain, newClientHandlers);
    newClientHandlers.forEach((eventHandler) => {
      var _a2;
      return (_a2 = newProvider.events) == null ? void 0 : _a2.addHandler(...eventHandler);
    });
  }
  close() {
    return __async(this, null, function* () {
      var _a, _b;
      try {
        yield (_b = (_a = this == null ? void 0 : this._defaultProvider.provider) == null ? void 0 : _a.onClose) == null ? void 0 : _b.call(_a);
      } catch (err) {
        this.handleShutdownError(this._defaultProvider.provider, err);
      }
      const wrappers = Array.from(this._domainScopedProviders);
      yield Promise.all(
        wrappers.map((_0) => __async(this, [_0], function* ([, wrapper]) {
          var _a2, _b2;
          try {
            yield (_b2 = wrapper == null ? void 0 : (_a2 = wrapper.provider).onClose) == null ? void 0 : _b2.call(_a2);
          } catch (err) {
            this.handleShutdownError(wrapper == null ? void 0 : wrapper.provider, err);
          }
        }))
      );
    });
  }
  clearProvidersAndSetDefault(defaultProvider) {
    return __async(this, null, function* () {
      try {
        yield this.close();
      } catch (err) {
        this._logger.error("Unable to cleanly close providers. Resetting to the default configuration.");
      } finally {
        this._domainScopedProviders.clear();
        this._defaultProvider = new ProviderWrapper(
          defaultProvider,
          this._statusEnumType.NOT_READY,
          this._statusEnumType
        );
      }
    });
  }
  getProviderInstanceBinding(provider) {
    if (this._defaultProvider.provider === provider) {
      return "";
    }
    for (const [domain, wrapper] of this._domainScopedProviders) {
      if (wrapper.provider === provider) {
        return domain;
      }
    }
    return null;
  }
  assertDomainScopedBindingAllowed(provider, domain) {
    if (!provider.domainScoped) {
      return;
    }
    const existingBinding = this.getProviderInstanceBinding(provider);
    if (existingBinding === null) {
      return;
    }
    const requestedBinding = domain != null ? domain : "";
    if (existingBinding === requestedBinding) {
      return;
    }
    throw new GeneralError(`Cannot bind domain-scoped provider '${provider.metadata.name}' to more than one domain.`);
  }
  get allProviders() {
    return [
      ...[...this._domainScopedProviders.values()].map((wrappers) => wrappers.provider),
      this._defaultProvider.provider
    ];
  }
  handleShutdownError(provider, err) {
    this._logger.error(`Error during shutdown of provider ${provider.metadata.name}: ${err}`);
    this._logger.error(err == null ? void 0 : err.stack);
  }
};

// node_modules/@openfeature/web-sdk/dist/esm/index.js
var __create = Object.create;
var __defProp2 = Object.defineProperty;
var __defProps2 = Object.defineProperties;
var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
var __getOwnPropDescs2 = Object.getOwnPropertyDescriptors;
var __getOwnPropNames = Object.getOwnPropertyNames;
var __getOwnPropSymbols2 = Object.getOwnPropertySymbols;
var __getProtoOf = Object.getPrototypeOf;
var __hasOwnProp2 = Object.prototype.hasOwnProperty;
var __propIsEnum2 = Object.prototype.propertyIsEnumerable;
var __reflectGet = Reflect.get;
var __defNormalProp2 = (obj, key, value) => key in obj ? __defProp2(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __spreadValues2 = (a, b) => {
  for (var prop in b || (b = {}))
    if (__hasOwnProp2.call(b, prop))
      __defNormalProp2(a, prop, b[prop]);
  if (__getOwnPropSymbols2)
    for (var prop of __getOwnPropSymbols2(b)) {
      if (__propIsEnum2.call(b, prop))
        __defNormalProp2(a, prop, b[prop]);
    }
  return a;
};
var __spreadProps2 = (a, b) => __defProps2(a, __getOwnPropDescs2(b));
var __commonJS = (cb, mod) => function __require() {
  try {
    return mod || (0, cb[__getOwnPropNames(cb)[0]])((mod = { exports: {} }).exports, mod), mod.exports;
  } catch (e) {
    throw mod = 0, e;
  }
};
var __copyProps = (to, from, except, desc) => {
  if (from && typeof from === "object" || typeof from === "function") {
    for (let key of __getOwnPropNames(from))
      if (!__hasOwnProp2.call(to, key) && key !== except)
        __defProp2(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
  }
  return to;
};
var __toESM = (mod, isNodeMode, target) => (target = mod != null ? __create(__getProtoOf(mod)) : {}, __copyProps(
  // If the importer is in node compatibility mode or this is not an ESM
  // file that has been converted to a CommonJS file using a Babel-
  // compatible transform (i.e. "__esModule" has not been set), then set
  // "default" to the CommonJS "module.exports" for node compatibility.
  isNodeMode || !mod || !mod.__esModule ? __defProp2(target, "default", { value: mod, enumerable: true }) : target,
  mod
));
var __superGet = (cls, obj, key) => __reflectGet(__getProtoOf(cls), key, obj);
var __async2 = (__this, __arguments, generator) => {
  return new Promise((resolve, reject) => {
    var fulfilled = (value) => {
      try {
        step(generator.next(value));
      } catch (e) {
        reject(e);
      }
    };
    var rejected = (value) => {
      try {
        step(generator.throw(value));
      } catch (e) {
        reject(e);
      }
    };
    var step = (x) => x.done ? resolve(x.value) : Promise.resolve(x.value).then(fulfilled, rejected);
    step((generator = generator.apply(__this, __arguments)).next());
  });
};
var require_eventemitter3 = __commonJS({
  "../../node_modules/eventemitter3/index.js"(exports, module) {
    "use strict";
    var has = Object.prototype.hasOwnProperty;
    var prefix = "~";
    function Events() {
    }
    if (Object.create) {
      Events.prototype = /* @__PURE__ */ Object.create(null);
      if (!new Events().__proto__) prefix = false;
    }
    function EE(fn, context, once) {
      this.fn = fn;
      this.context = context;
      this.once = once || false;
    }
    function addListener(emitter, event, fn, context, once) {
      if (typeof fn !== "function") {
        throw new TypeError("The listener must be a function");
      }
      var listener = new EE(fn, context || emitter, once), evt = prefix ? prefix + event : event;
      if (!emitter._events[evt]) emitter._events[evt] = listener, emitter._eventsCount++;
      else if (!emitter._events[evt].fn) emitter._events[evt].push(listener);
      else emitter._events[evt] = [emitter._events[evt], listener];
      return emitter;
    }
    function clearEvent(emitter, evt) {
      if (--emitter._eventsCount === 0) emitter._events = new Events();
      else delete emitter._events[evt];
    }
    function EventEmitter2() {
      this._events = new Events();
      this._eventsCount = 0;
    }
    EventEmitter2.prototype.eventNames = function eventNames() {
      var names = [], events, name;
      if (this._eventsCount === 0) return names;
      for (name in events = this._events) {
        if (has.call(events, name)) names.push(prefix ? name.slice(1) : name);
      }
      if (Object.getOwnPropertySymbols) {
        return names.concat(Object.getOwnPropertySymbols(events));
      }
      return names;
    };
    EventEmitter2.prototype.listeners = function listeners(event) {
      var evt = prefix ? prefix + event : event, handlers = this._events[evt];
      if (!handlers) return [];
      if (handlers.fn) return [handlers.fn];
      for (var i = 0, l = handlers.length, ee = new Array(l); i < l; i++) {
        ee[i] = handlers[i].fn;
      }
      return ee;
    };
    EventEmitter2.prototype.listenerCount = function listenerCount(event) {
      var evt = prefix ? prefix + event : event, listeners = this._events[evt];
      if (!listeners) return 0;
      if (listeners.fn) return 1;
      return listeners.length;
    };
    EventEmitter2.prototype.emit = function emit(event, a1, a2, a3, a4, a5) {
      var evt = prefix ? prefix + event : event;
      if (!this._events[evt]) return false;
      var listeners = this._events[evt], len = arguments.length, args, i;
      if (listeners.fn) {
        if (listeners.once) this.removeListener(event, listeners.fn, void 0, true);
        switch (len) {
          case 1:
            return listeners.fn.call(listeners.context), true;
          case 2:
            return listeners.fn.call(listeners.context, a1), true;
          case 3:
            return listeners.fn.call(listeners.context, a1, a2), true;
          case 4:
            return listeners.fn.call(listeners.context, a1, a2, a3), true;
          case 5:
            return listeners.fn.call(listeners.context, a1, a2, a3, a4), true;
          case 6:
            return listeners.fn.call(listeners.context, a1, a2, a3, a4, a5), true;
        }
        for (i = 1, args = new Array(len - 1); i < len; i++) {
          args[i - 1] = arguments[i];
        }
        listeners.fn.apply(listeners.context, args);
      } else {
        var length = listeners.length, j;
        for (i = 0; i < length; i++) {
          if (listeners[i].once) this.removeListener(event, listeners[i].fn, void 0, true);
          switch (len) {
            case 1:
              listeners[i].fn.call(listeners[i].context);
              break;
            case 2:
              listeners[i].fn.call(listeners[i].context, a1);
              break;
            case 3:
              listeners[i].fn.call(listeners[i].context, a1, a2);
              break;
            case 4:
              listeners[i].fn.call(listeners[i].context, a1, a2, a3);
              break;
            default:
              if (!args) for (j = 1, args = new Array(len - 1); j < len; j++) {
                args[j - 1] = arguments[j];
              }
              listeners[i].fn.apply(listeners[i].context, args);
          }
        }
      }
      return true;
    };
    EventEmitter2.prototype.on = function on(event, fn, context) {
      return addListener(this, event, fn, context, false);
    };
    EventEmitter2.prototype.once = function once(event, fn, context) {
      return addListener(this, event, fn, context, true);
    };
    EventEmitter2.prototype.removeListener = function removeListener(event, fn, context, once) {
      var evt = prefix ? prefix + event : event;
      if (!this._events[evt]) return this;
      if (!fn) {
        clearEvent(this, evt);
        return this;
      }
      var listeners = this._events[evt];
      if (listeners.fn) {
        if (listeners.fn === fn && (!once || listeners.once) && (!context || listeners.context === context)) {
          clearEvent(this, evt);
        }
      } else {
        for (var i = 0, events = [], length = listeners.length; i < length; i++) {
          if (listeners[i].fn !== fn || once && !listeners[i].once || context && listeners[i].context !== context) {
            events.push(listeners[i]);
          }
        }
        if (events.length) this._events[evt] = events.length === 1 ? events[0] : events;
        else clearEvent(this, evt);
      }
      return this;
    };
    EventEmitter2.prototype.removeAllListeners = function removeAllListeners(event) {
      var evt;
      if (event) {
        evt = prefix ? prefix + event : event;
        if (this._events[evt]) clearEvent(this, evt);
      } else {
        this._events = new Events();
        this._eventsCount = 0;
      }
      return this;
    };
    EventEmitter2.prototype.off = EventEmitter2.prototype.removeListener;
    EventEmitter2.prototype.addListener = EventEmitter2.prototype.on;
    EventEmitter2.prefixed = prefix;
    EventEmitter2.EventEmitter = EventEmitter2;
    if ("undefined" !== typeof module) {
      module.exports = EventEmitter2;
    }
  }
});
var REASON_NO_OP = "No-op";
var NoopFeatureProvider = class {
  constructor() {
    this.metadata = {
      name: "No-op Provider"
    };
  }
  resolveBooleanEvaluation(_, defaultValue) {
    return this.noOp(defaultValue);
  }
  resolveStringEvaluation(_, defaultValue) {
    return this.noOp(defaultValue);
  }
  resolveNumberEvaluation(_, defaultValue) {
    return this.noOp(defaultValue);
  }
  resolveObjectEvaluation(_, defaultValue) {
    return this.noOp(defaultValue);
  }
  noOp(defaultValue) {
    return {
      value: defaultValue,
      reason: REASON_NO_OP
    };
  }
};
var NOOP_PROVIDER = new NoopFeatureProvider();
var import_index = __toESM(require_eventemitter3(), 1);
var OpenFeatureEventEmitter = class extends GenericEventEmitter {
  constructor() {
    super();
    this.eventEmitter = new import_index.default();
  }
};
var OpenFeatureClient = class {
  constructor(providerAccessor, providerStatusAccessor, emitterAccessor, apiContextAccessor, apiHooksAccessor, globalLogger, options) {
    this.providerAccessor = providerAccessor;
    this.providerStatusAccessor = providerStatusAccessor;
    this.emitterAccessor = emitterAccessor;
    this.apiContextAccessor = apiContextAccessor;
    this.apiHooksAccessor = apiHooksAccessor;
    this.globalLogger = globalLogger;
    this.options = options;
    this._hooks = [];
  }
  get metadata() {
    var _a, _b;
    return {
      // Use domain if name is not provided
      name: (_a = this.options.domain) != null ? _a : this.options.name,
      domain: (_b = this.options.domain) != null ? _b : this.options.name,
      version: this.options.version,
      sdk: "js-web",
      paradigm: "client",
      providerMetadata: this.providerAccessor().metadata
    };
  }
  get providerStatus() {
    return this.providerStatusAccessor();
  }
  addHandler(eventType, handler, options) {
    var _a;
    this.emitterAccessor().addHandler(eventType, handler);
    const shouldRunNow = statusMatchesEvent(eventType, this.providerStatus);
    if (shouldRunNow) {
      try {
        handler({
          clientName: this.metadata.name,
          domain: this.metadata.domain,
          providerName: this._provider.metadata.name
        });
      } catch (err) {
        (_a = this._logger) == null ? void 0 : _a.error("Error running event handler:", err);
      }
    }
    if ((options == null ? void 0 : options.signal) && typeof options.signal.addEventListener === "function") {
      options.signal.addEventListener("abort", () => {
        this.removeHandler(eventType, handler);
      });
    }
  }
  removeHandler(notificationType, handler) {
    this.emitterAccessor().removeHandler(notificationType, handler);
  }
  getHandlers(eventType) {
    return this.emitterAccessor().getHandlers(eventType);
  }
  setLogger(logger) {
    this._clientLogger = new SafeLogger(logger);
    return this;
  }
  addHooks(...hooks) {
    this._hooks = [...this._hooks, ...hooks];
    return this;
  }
  getHooks() {
    return this._hooks;
  }
  clearHooks() {
    this._hooks = [];
    return this;
  }
  getBooleanValue(flagKey, defaultValue, options) {
    return this.getBooleanDetails(flagKey, defaultValue, options).value;
  }
  getBooleanDetails(flagKey, defaultValue, options) {
    return this.evaluate(flagKey, this._provider.resolveBooleanEvaluation, defaultValue, "boolean", options);
  }
  getStringValue(flagKey, defaultValue, options) {
    return this.getStringDetails(flagKey, defaultValue, options).value;
  }
  getStringDetails(flagKey, defaultValue, options) {
    return this.evaluate(
      flagKey,
      // this isolates providers from our restricted string generic argument.
      this._provider.resolveStringEvaluation,
      defaultValue,
      "string",
      options
    );
  }
  getNumberValue(flagKey, defaultValue, options) {
    return this.getNumberDetails(flagKey, defaultValue, options).value;
  }
  getNumberDetails(flagKey, defaultValue, options) {
    return this.evaluate(
      flagKey,
      // this isolates providers from our restricted number generic argument.
      this._provider.resolveNumberEvaluation,
      defaultValue,
      "number",
      options
    );
  }
  getObjectValue(flagKey, defaultValue, options) {
    return this.getObjectDetails(flagKey, defaultValue, options).value;
  }
  getObjectDetails(flagKey, defaultValue, options) {
    return this.evaluate(flagKey, this._provider.resolveObjectEvaluation, defaultValue, "object", options);
  }
  track(occurrenceKey, occurrenceDetails = {}) {
    var _a, _b, _c;
    try {
      this.shortCircuitIfNotReady();
      if (typeof this._provider.track === "function") {
        const frozenContext = Object.freeze(__spreadValues2({}, this.apiContextAccessor((_a = this == null ? void 0 : this.options) == null ? void 0 : _a.domain)));
        return (_c = (_b = this._provider).track) == null ? void 0 : _c.call(_b, occurrenceKey, frozenContext, occurrenceDetails);
      } else {
        this._logger.debug("Provider does not support the track function; will no-op.");
      }
    } catch (err) {
      this._logger.debug("Error recording tracking event.", err);
    }
  }
  evaluate(flagKey, resolver, defaultValue, flagType, options = {}) {
    var _a, _b;
    const allHooks = [
      ...this.apiHooksAccessor(),
      ...this.getHooks(),
      ...options.hooks || [],
      ...this._provider.hooks || []
    ];
    const allHooksReversed = [...allHooks].reverse();
    const context = __spreadValues2({}, this.apiContextAccessor((_a = this == null ? void 0 : this.options) == null ? void 0 : _a.domain));
    const hookContexts = allHooksReversed.map(
      () => Object.freeze({
        flagKey,
        defaultValue,
        flagValueType: flagType,
        clientMetadata: this.metadata,
        providerMetadata: this._provider.metadata,
        context,
        logger: this._logger,
        hookData: new MapHookData()
      })
    );
    let evaluationDetails;
    try {
      this.beforeHooks(allHooks, hookContexts, options);
      this.shortCircuitIfNotReady();
      const resolution = resolver.call(this._provider, flagKey, defaultValue, context, this._logger);
      const resolutionDetails = __spreadProps2(__spreadValues2({}, resolution), {
        flagMetadata: Object.freeze((_b = resolution.flagMetadata) != null ? _b : {}),
        flagKey
      });
      if (resolutionDetails.errorCode) {
        const err = instantiateErrorByErrorCode(resolutionDetails.errorCode, resolutionDetails.errorMessage);
        this.errorHooks(allHooksReversed, hookContexts, err, options);
        evaluationDetails = this.getErrorEvaluationDetails(flagKey, defaultValue, err, resolutionDetails.flagMetadata);
      } else {
        this.afterHooks(allHooksReversed, hookContexts, resolutionDetails, options);
        evaluationDetails = resolutionDetails;
      }
    } catch (err) {
      this.errorHooks(allHooksReversed, hookContexts, err, options);
      evaluationDetails = this.getErrorEvaluationDetails(flagKey, defaultValue, err);
    }
    this.finallyHooks(allHooksReversed, hookContexts, evaluationDetails, options);
    return evaluationDetails;
  }
  beforeHooks(hooks, hookContexts, options) {
    var _a;
    for (const [index, hook] of hooks.entries()) {
      const hookContextIndex = hooks.length - 1 - index;
      const hookContext = hookContexts[hookContextIndex];
      Object.freeze(hookContext);
      Object.freeze(hookContext.context);
      (_a = hook == null ? void 0 : hook.before) == null ? void 0 : _a.call(hook, hookContext, Object.freeze(options.hookHints));
    }
  }
  afterHooks(hooks, hookContexts, evaluationDetails, options) {
    var _a;
    for (const [index, hook] of hooks.entries()) {
      const hookContext = hookContexts[index];
      (_a = hook == null ? void 0 : hook.after) == null ? void 0 : _a.call(hook, hookContext, evaluationDetails, options.hookHints);
    }
  }
  errorHooks(hooks, hookContexts, err, options) {
    var _a;
    for (const [index, hook] of hooks.entries()) {
      try {
        const hookContext = hookContexts[index];
        (_a = hook == null ? void 0 : hook.error) == null ? void 0 : _a.call(hook, hookContext, err, options.hookHints);
      } catch (err2) {
        this._logger.error(`Unhandled error during 'error' hook: ${err2}`);
        if (err2 instanceof Error) {
          this._logger.error(err2.stack);
        }
        this._logger.error(err2 == null ? void 0 : err2.stack);
      }
    }
  }
  finallyHooks(hooks, hookContexts, evaluationDetails, options) {
    var _a;
    for (const [index, hook] of hooks.entries()) {
      try {
        const hookContext = hookContexts[index];
        (_a = hook == null ? void 0 : hook.finally) == null ? void 0 : _a.call(hook, hookContext, evaluationDetails, options.hookHints);
      } catch (err) {
        this._logger.error(`Unhandled error during 'finally' hook: ${err}`);
        if (err instanceof Error) {
          this._logger.error(err.stack);
        }
        this._logger.error(err == null ? void 0 : err.stack);
      }
    }
  }
  get _provider() {
    return this.providerAccessor();
  }
  get _logger() {
    return this._clientLogger || this.globalLogger();
  }
  shortCircuitIfNotReady() {
    if (this.providerStatus === ClientProviderStatus.NOT_READY) {
      throw new ProviderNotReadyError("provider has not yet initialized");
    } else if (this.providerStatus === ClientProviderStatus.FATAL) {
      throw new ProviderFatalError("provider is in an irrecoverable error state");
    }
  }
  getErrorEvaluationDetails(flagKey, defaultValue, err, flagMetadata = {}) {
    const errorMessage = err == null ? void 0 : err.message;
    const errorCode = (err == null ? void 0 : err.code) || ErrorCode.GENERAL;
    return {
      errorCode,
      errorMessage,
      value: defaultValue,
      reason: StandardResolutionReasons.ERROR,
      flagMetadata: Object.freeze(flagMetadata),
      flagKey
    };
  }
};
var GLOBAL_OPENFEATURE_API_KEY = /* @__PURE__ */ Symbol.for("@openfeature/web-sdk/api");
var _globalThis = globalThis;
var OpenFeatureAPI = class _OpenFeatureAPI extends OpenFeatureCommonAPI {
  constructor() {
    super("client");
    this._statusEnumType = ClientProviderStatus;
    this._apiEmitter = new OpenFeatureEventEmitter();
    this._defaultProvider = new ProviderWrapper(
      NOOP_PROVIDER,
      ClientProviderStatus.NOT_READY,
      this._statusEnumType
    );
    this._domainScopedProviders = /* @__PURE__ */ new Map();
    this._createEventEmitter = () => new OpenFeatureEventEmitter();
  }
  /**
   * Gets a singleton instance of the OpenFeature API.
   * @ignore
   * @returns {OpenFeatureAPI} OpenFeature API
   */
  static getInstance() {
    const globalApi = _globalThis[GLOBAL_OPENFEATURE_API_KEY];
    if (globalApi) {
      return globalApi;
    }
    const instance = new _OpenFeatureAPI();
    _globalThis[GLOBAL_OPENFEATURE_API_KEY] = instance;
    return instance;
  }
  getProviderStatus(domain) {
    var _a, _b;
    if (!domain) {
      return this._defaultProvider.status;
    }
    return (_b = (_a = this._domainScopedProviders.get(domain)) == null ? void 0 : _a.status) != null ? _b : this._defaultProvider.status;
  }
  setProviderAndWait(clientOrProvider, providerContextOrUndefined, contextOrUndefined) {
    return __async2(this, null, function* () {
      const domain = stringOrUndefined(clientOrProvider);
      const provider = domain ? objectOrUndefined(providerContextOrUndefined) : objectOrUndefined(clientOrProvider);
      const context = domain ? objectOrUndefined(contextOrUndefined) : objectOrUndefined(providerContextOrUndefined);
      if (context) {
        if (domain) {
          this._domainScopedContext.set(domain, context);
        } else {
          this._context = context;
        }
      }
      yield this.setAwaitableProvider(domain, provider);
    });
  }
  setProvider(domainOrProvider, providerContextOrUndefined, contextOrUndefined) {
    const domain = stringOrUndefined(domainOrProvider);
    const provider = domain ? objectOrUndefined(providerContextOrUndefined) : objectOrUndefined(domainOrProvider);
    const context = domain ? objectOrUndefined(contextOrUndefined) : objectOrUndefined(providerContextOrUndefined);
    if (context) {
      if (domain) {
        this._domainScopedContext.set(domain, context);
      } else {
        this._context = context;
      }
    }
    const maybePromise = this.setAwaitableProvider(domain, provider);
    Promise.resolve(maybePromise).catch((err) => {
      this._logger.error("Error during provider initialization:", err);
    });
    return this;
  }
  getProvider(domain) {
    return this.getProviderForClient(domain);
  }
  setContext(domainOrContext, contextOrUndefined) {
    return __async2(this, null, function* () {
      var _a, _b;
      const domain = stringOrUndefined(domainOrContext);
      const context = (_b = (_a = objectOrUndefined(domainOrContext)) != null ? _a : objectOrUndefined(contextOrUndefined)) != null ? _b : {};
      if (domain) {
        const wrapper = this._domainScopedProviders.get(domain);
        if (wrapper) {
          const oldContext = this.getContext(domain);
          this._domainScopedContext.set(domain, context);
          yield this.runProviderContextChangeHandler(domain, wrapper, oldContext, context);
        } else {
          this._domainScopedContext.set(domain, context);
        }
      } else {
        const oldContext = this._context;
        this._context = context;
        const unboundProviders = Array.from(this._domainScopedProviders.entries()).filter(([domain2]) => !this._domainScopedContext.has(domain2)).reduce((acc, [domain2, wrapper]) => {
          acc.push({ domain: domain2, wrapper });
          return acc;
        }, []);
        const allDomainRecords = [
          // add in the default (no domain)
          { domain: void 0, wrapper: this._defaultProvider },
          ...unboundProviders
        ];
        yield Promise.all(
          allDomainRecords.map((dm) => this.runProviderContextChangeHandler(dm.domain, dm.wrapper, oldContext, context))
        );
      }
    });
  }
  getContext(domainOrUndefined) {
    const domain = stringOrUndefined(domainOrUndefined);
    if (domain) {
      const context = this._domainScopedContext.get(domain);
      if (context) {
        return context;
      } else {
        this._logger.debug(`Unable to find context for '${domain}'.`);
      }
    }
    return this._context;
  }
  clearContext(domainOrUndefined) {
    return __async2(this, null, function* () {
      const domain = stringOrUndefined(domainOrUndefined);
      if (domain) {
        const wrapper = this._domainScopedProviders.get(domain);
        if (wrapper) {
          const oldContext = this.getContext(domain);
          this._domainScopedContext.delete(domain);
          const newContext = this.getContext();
          yield this.runProviderContextChangeHandler(domain, wrapper, oldContext, newContext);
        } else {
          this._domainScopedContext.delete(domain);
        }
      } else {
        return this.setContext({});
      }
    });
  }
  /**
   * Resets the global evaluation context and removes the evaluation context for
   * all domains.
   */
  clearContexts() {
    return __async2(this, null, function* () {
      yield this.clearContext();
      yield Promise.allSettled(Array.from(this._domainScopedProviders.keys()).map((domain) => this.clearContext(domain)));
    });
  }
  /**
   * A factory function for creating new domain-scoped OpenFeature clients. Clients
   * can contain their own state (e.g. logger, hook, context). Multiple domains
   * can be used to segment feature flag configuration.
   *
   * If there is already a provider bound to this name via {@link this.setProvider setProvider}, this provider will be used.
   * Otherwise, the default provider is used until a provider is assigned to that name.
   * @param {string} domain An identifier which logically binds clients with providers
   * @param {string} version The version of the client (only used for metadata)
   * @returns {Client} OpenFeature Client
   */
  getClient(domain, version) {
    return new OpenFeatureClient(
      // functions are passed here to make sure that these values are always up to date,
      // and so we don't have to make these public properties on the API class.
      () => this.getProviderForClient(domain),
      () => this.getProviderStatus(domain),
      () => this.buildAndCacheEventEmitterForClient(domain),
      (domain2) => this.getContext(domain2),
      () => this.getHooks(),
      () => this._logger,
      { domain, version }
    );
  }
  /**
   * Clears all registered providers and resets the default provider.
   * @returns {Promise<void>}
   */
  clearProviders() {
    return __async2(this, null, function* () {
      yield __superGet(_OpenFeatureAPI.prototype, this, "clearProvidersAndSetDefault").call(this, NOOP_PROVIDER);
      this._domainScopedContext.clear();
    });
  }
  runProviderContextChangeHandler(domain, wrapper, oldContext, newContext) {
    return __async2(this, null, function* () {
      var _a, _b, _c, _d, _e, _f;
      const providerName = ((_b = (_a = wrapper.provider) == null ? void 0 : _a.metadata) == null ? void 0 : _b.name) || "unnamed-provider";
      try {
        if (typeof wrapper.provider.onContextChange === "function") {
          const maybePromise = wrapper.provider.onContextChange(oldContext, newContext);
          if (maybePromise && typeof (maybePromise == null ? void 0 : maybePromise.then) === "function") {
            wrapper.incrementPendingContextChanges();
            wrapper.status = this._statusEnumType.RECONCILING;
            this.getAssociatedEventEmitters(domain).forEach((emitter) => {
              emitter == null ? void 0 : emitter.emit(ClientProviderEvents.Reconciling, { domain, providerName });
            });
            (_c = this._apiEmitter) == null ? void 0 : _c.emit(ClientProviderEvents.Reconciling, { domain, providerName });
            yield maybePromise;
            wrapper.decrementPendingContextChanges();
          }
        }
        wrapper.status = this._statusEnumType.READY;
        if (wrapper.allContextChangesSettled) {
          this.getAssociatedEventEmitters(domain).forEach((emitter) => {
            emitter == null ? void 0 : emitter.emit(ClientProviderEvents.ContextChanged, { clientName: domain, domain, providerName });
          });
          (_d = this._apiEmitter) == null ? void 0 : _d.emit(ClientProviderEvents.ContextChanged, { clientName: domain, domain, providerName });
        }
      } catch (err) {
        wrapper.decrementPendingContextChanges();
        wrapper.status = this._statusEnumType.ERROR;
        if (wrapper.allContextChangesSettled) {
          const error = err;
          const message = `Error running ${providerName}'s context change handler: ${error == null ? void 0 : error.message}`;
          (_e = this._logger) == null ? void 0 : _e.error(`${message}`, err);
          this.getAssociatedEventEmitters(domain).forEach((emitter) => {
            emitter == null ? void 0 : emitter.emit(ClientProviderEvents.Error, { clientName: domain, domain, providerName, message });
          });
          (_f = this._apiEmitter) == null ? void 0 : _f.emit(ClientProviderEvents.Error, { clientName: domain, domain, providerName, message });
        }
      }
    });
  }
};
var OpenFeature = OpenFeatureAPI.getInstance();

// node_modules/@openfeature/ofrep-core/index.esm.js
var OFREPApiError = class _OFREPApiError extends Error {
  constructor(error, response, message, options) {
    super(message, options);
    this.error = error;
    this.response = response;
    Object.setPrototypeOf(this, _OFREPApiError.prototype);
    this.name = _OFREPApiError.name;
  }
};
var OFREPApiFetchError = class _OFREPApiFetchError extends OFREPApiError {
  constructor(error, message, options) {
    super(error, void 0, message, options);
    Object.setPrototypeOf(this, _OFREPApiFetchError.prototype);
    this.name = _OFREPApiFetchError.name;
  }
};
var OFREPApiUnexpectedResponseError = class _OFREPApiUnexpectedResponseError extends OFREPApiError {
  constructor(response, message, options) {
    super(void 0, response, message, options);
    Object.setPrototypeOf(this, _OFREPApiUnexpectedResponseError.prototype);
    this.name = _OFREPApiUnexpectedResponseError.name;
  }
};
var OFREPApiUnauthorizedError = class _OFREPApiUnauthorizedError extends OFREPApiError {
  constructor(response, message, options) {
    super(void 0, response, message, options);
    Object.setPrototypeOf(this, _OFREPApiUnauthorizedError.prototype);
    this.name = _OFREPApiUnauthorizedError.name;
    this.message = message !== null && message !== void 0 ? message : "OFREP request failed: unauthorized";
  }
};
var OFREPForbiddenError = class _OFREPForbiddenError extends OFREPApiError {
  constructor(response, message, options) {
    super(void 0, response, message, options);
    Object.setPrototypeOf(this, _OFREPForbiddenError.prototype);
    this.name = _OFREPForbiddenError.name;
    this.message = message !== null && message !== void 0 ? message : "OFREP request failed: forbidden";
  }
};
var OFREPApiTooManyRequestsError = class _OFREPApiTooManyRequestsError extends OFREPApiError {
  constructor(response, message, options) {
    super(void 0, response, message, options);
    this.response = response;
    Object.setPrototypeOf(this, _OFREPApiTooManyRequestsError.prototype);
    this.name = _OFREPApiTooManyRequestsError.name;
    this.requestTime = /* @__PURE__ */ new Date();
    this.message = (message !== null && message !== void 0 ? message : this.retryAfterDate) ? `rate limit exceeded, try again after ${this.retryAfterDate}` : `rate limit exceeded, try again later`;
  }
  get retryAfterHeader() {
    return this.response.headers.get("Retry-After");
  }
  get retryAfterSeconds() {
    if (!this.retryAfterHeader) {
      return null;
    }
    const retrySeconds = Number.parseInt(this.retryAfterHeader, 10);
    if (!Number.isFinite(retrySeconds)) {
      return null;
    }
    return retrySeconds;
  }
  get retryAfterDate() {
    if (!this.retryAfterHeader) {
      return null;
    }
    if (this.retryAfterSeconds) {
      const retryAfterSeconds = this.retryAfterSeconds;
      if (!retryAfterSeconds) {
        return null;
      }
      return new Date(this.requestTime.getTime() + this.retryAfterSeconds * 1e3);
    }
    const date = new Date(this.retryAfterHeader);
    if (isNaN(date.valueOf())) {
      return null;
    }
    return date;
  }
};
function __awaiter(thisArg, _arguments, P, generator) {
  function adopt(value) {
    return value instanceof P ? value : new P(function(resolve) {
      resolve(value);
    });
  }
  return new (P || (P = Promise))(function(resolve, reject) {
    function fulfilled(value) {
      try {
        step(generator.next(value));
      } catch (e) {
        reject(e);
      }
    }
    function rejected(value) {
      try {
        step(generator["throw"](value));
      } catch (e) {
        reject(e);
      }
    }
    function step(result) {
      result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
    }
    step((generator = generator.apply(thisArg, _arguments || [])).next());
  });
}
function isEvaluationFailureResponse(response) {
  if (!response || typeof response !== "object") {
    return false;
  }
  return "key" in response && typeof response.key === "string" && "errorCode" in response && typeof response.errorCode === "string";
}
function isBulkEvaluationFailureResponse(response) {
  if (!response || typeof response !== "object") {
    return false;
  }
  return "errorCode" in response;
}
function isBulkEvaluationSuccessResponse(response) {
  if (!response || typeof response !== "object") {
    return false;
  }
  return "flags" in response;
}
var OFREPEvaluationErrorHttpStatuses = [400, 404, 500];
var OFREPEvaluationSuccessHttpStatuses = [200];
function buildHeaders(options_1) {
  return __awaiter(this, arguments, void 0, function* (options, etag = null) {
    var _a;
    return new Headers([
      ["Content-Type", "application/json; charset=utf-8"],
      ...(options === null || options === void 0 ? void 0 : options.headers) || [],
      ...(yield (_a = options === null || options === void 0 ? void 0 : options.headersFactory) === null || _a === void 0 ? void 0 : _a.call(options)) || [],
      ...etag ? [["If-None-Match", etag]] : []
    ]);
  });
}
function isDefined2(value) {
  return typeof value !== "undefined";
}
function isomorphicFetch() {
  if (globalThis) {
    return globalThis.fetch.bind(globalThis);
  } else if (window) {
    return window.fetch.bind(window);
  } else if (self) {
    return self.fetch.bind(self);
  }
  return fetch;
}
var DEFAULT_TIMEOUT_MS = 1e4;
var ErrorMessageMap = {
  [ErrorCode.FLAG_NOT_FOUND]: "Flag was not found",
  [ErrorCode.GENERAL]: "General error",
  [ErrorCode.INVALID_CONTEXT]: "Context is invalid or could be parsed",
  [ErrorCode.PARSE_ERROR]: "Flag or flag configuration could not be parsed",
  [ErrorCode.PROVIDER_FATAL]: "Provider is in a fatal error state",
  [ErrorCode.PROVIDER_NOT_READY]: "Provider is not yet ready",
  [ErrorCode.TARGETING_KEY_MISSING]: "Targeting key is missing",
  [ErrorCode.TYPE_MISMATCH]: "Flag is not of expected type"
};
var OFREPApi = class _OFREPApi {
  constructor(baseOptions, fetchImplementation = isomorphicFetch()) {
    this.baseOptions = baseOptions;
    this.fetchImplementation = fetchImplementation;
    this._shutdownController = new AbortController();
  }
  isJsonMime(response) {
    const contentTypeHeader = response.headers.get("Content-Type");
    return !!contentTypeHeader && _OFREPApi.jsonRegex.test(contentTypeHeader);
  }
  static isOFREFErrorHttpStatus(status) {
    return OFREPEvaluationErrorHttpStatuses.includes(status);
  }
  static isOFREFSuccessHttpStatus(status) {
    return OFREPEvaluationSuccessHttpStatuses.includes(status);
  }
  /**
   * Aborts any in-flight requests and releases resources.
   * After calling this method, the OFREPApi instance should not be used.
   */
  close() {
    this._shutdownController.abort();
  }
  doFetchRequest(req) {
    return __awaiter(this, void 0, void 0, function* () {
      var _a;
      if (this._shutdownController.signal.aborted) {
        const abortError = new DOMException("Provider is closed", "AbortError");
        throw new OFREPApiFetchError(abortError, "The OFREP request failed because the provider has been closed.", {
          cause: abortError
        });
      }
      let response;
      const timeoutMs = (_a = this.baseOptions.timeoutMs) !== null && _a !== void 0 ? _a : DEFAULT_TIMEOUT_MS;
      const controller = new AbortController();
      const onShutdown = () => controller.abort();
      this._shutdownController.signal.addEventListener("abort", onShutdown);
      const timeoutId = setTimeout(() => controller.abort(new DOMException(`This signal is timeout in ${timeoutMs}ms`, "TimeoutError")), timeoutMs);
      try {
        response = yield this.fetchImplementation(req, {
          signal: controller.signal
        });
      } catch (err) {
        throw new OFREPApiFetchError(err, "The OFREP request failed.", { cause: err });
      } finally {
        clearTimeout(timeoutId);
        this._shutdownController.signal.removeEventListener("abort", onShutdown);
      }
      if (response.status === 401) {
        throw new OFREPApiUnauthorizedError(response);
      }
      if (response.status === 403) {
        throw new OFREPForbiddenError(response);
      }
      if (response.status === 429) {
        throw new OFREPApiTooManyRequestsError(response);
      }
      if (response.status === 200 && !this.isJsonMime(response)) {
        throw new OFREPApiUnexpectedResponseError(response, "OFREP did not respond with expected MIME application/json");
      }
      try {
        return { response, body: yield response.json() };
      } catch (_b) {
        return { response };
      }
    });
  }
  postEvaluateFlag(flagKey, evaluationRequest) {
    return __awaiter(this, void 0, void 0, function* () {
      let url = `${this.baseOptions.baseUrl}/ofrep/v1/evaluate/flags/${encodeURIComponent(flagKey)}`;
      if (this.baseOptions.query) {
        url = url + `?${this.baseOptions.query.toString()}`;
      }
      const request = new Request(url, {
        headers: yield buildHeaders(this.baseOptions),
        method: "POST",
        body: JSON.stringify(evaluationRequest !== null && evaluationRequest !== void 0 ? evaluationRequest : {})
      });
      const { response, body } = yield this.doFetchRequest(request);
      if (response.status === 200 && body && !isEvaluationFailureResponse(body)) {
        return { httpStatus: response.status, value: body, httpResponse: response };
      } else if (_OFREPApi.isOFREFErrorHttpStatus(response.status) && isEvaluationFailureResponse(body)) {
        return { httpStatus: response.status, value: body, httpResponse: response };
      }
      throw new OFREPApiUnexpectedResponseError(response, "The OFREP response does not match the expected format");
    });
  }
  postBulkEvaluateFlags(requestBody_1) {
    return __awaiter(this, arguments, void 0, function* (requestBody, etag = null, sseMetadata) {
      let url = `${this.baseOptions.baseUrl}/ofrep/v1/evaluate/flags`;
      const params = new URLSearchParams(this.baseOptions.query);
      if (sseMetadata === null || sseMetadata === void 0 ? void 0 : sseMetadata.flagConfigEtag) {
        params.set("flagConfigEtag", sseMetadata.flagConfigEtag);
      }
      if ((sseMetadata === null || sseMetadata === void 0 ? void 0 : sseMetadata.flagConfigLastModified) !== void 0) {
        params.set("flagConfigLastModified", String(sseMetadata.flagConfigLastModified));
      }
      const qs = params.toString();
      if (qs) {
        url = url + `?${qs}`;
      }
      const request = new Request(url, {
        headers: yield buildHeaders(this.baseOptions, etag),
        method: "POST",
        body: JSON.stringify(requestBody !== null && requestBody !== void 0 ? requestBody : {})
      });
      const { response, body } = yield this.doFetchRequest(request);
      if (response.status === 200 && isBulkEvaluationSuccessResponse(body)) {
        return { httpStatus: response.status, value: body, httpResponse: response };
      } else if (response.status === 304) {
        return { httpStatus: response.status, value: void 0, httpResponse: response };
      } else if (_OFREPApi.isOFREFErrorHttpStatus(response.status) && isBulkEvaluationFailureResponse(body)) {
        return { httpStatus: response.status, value: body, httpResponse: response };
      }
      throw new OFREPApiUnexpectedResponseError(response, "The OFREP response does not match the expected format");
    });
  }
};
OFREPApi.jsonRegex = new RegExp(/application\/[^+]*[+]?(json);?.*/, "i");
function handleEvaluationError(resultOrError, defaultValue, callback) {
  var _a, _b, _c;
  callback === null || callback === void 0 ? void 0 : callback(resultOrError);
  if ("errorCode" in resultOrError) {
    const code = (_a = resultOrError.errorCode) !== null && _a !== void 0 ? _a : ErrorCode.GENERAL;
    const message = (_c = (_b = resultOrError.errorDetails) !== null && _b !== void 0 ? _b : ErrorMessageMap[resultOrError.errorCode]) !== null && _c !== void 0 ? _c : resultOrError.errorCode;
    const metadata = toFlagMetadata(resultOrError.metadata);
    return {
      value: defaultValue,
      reason: StandardResolutionReasons.ERROR,
      flagMetadata: metadata,
      errorCode: code,
      errorMessage: message
    };
  } else {
    throw resultOrError;
  }
}
function toResolutionDetails(result, defaultValue) {
  if (!isDefined2(result.value)) {
    return {
      value: defaultValue,
      variant: result.variant,
      flagMetadata: result.metadata,
      reason: result.reason || StandardResolutionReasons.DEFAULT
    };
  }
  if (typeof result.value !== typeof defaultValue) {
    return {
      value: defaultValue,
      reason: StandardResolutionReasons.ERROR,
      flagMetadata: result.metadata,
      errorCode: ErrorCode.TYPE_MISMATCH,
      errorMessage: ErrorMessageMap[ErrorCode.TYPE_MISMATCH]
    };
  }
  return {
    value: result.value,
    variant: result.variant,
    reason: result.reason,
    flagMetadata: toFlagMetadata(result.metadata)
  };
}
function toFlagMetadata(metadata) {
  if (!metadata) {
    return void 0;
  }
  const originalEntries = Object.entries(metadata);
  const onlyPrimitiveEntries = originalEntries.filter(([, value]) => ["string", "number", "boolean"].includes(typeof value));
  return Object.fromEntries(onlyPrimitiveEntries);
}

// node_modules/@openfeature/ofrep-web-provider/index.esm.js
function __awaiter2(thisArg, _arguments, P, generator) {
  function adopt(value) {
    return value instanceof P ? value : new P(function(resolve) {
      resolve(value);
    });
  }
  return new (P || (P = Promise))(function(resolve, reject) {
    function fulfilled(value) {
      try {
        step(generator.next(value));
      } catch (e) {
        reject(e);
      }
    }
    function rejected(value) {
      try {
        step(generator["throw"](value));
      } catch (e) {
        reject(e);
      }
    }
    function step(result) {
      result.done ? resolve(result.value) : adopt(result.value).then(fulfilled, rejected);
    }
    step((generator = generator.apply(thisArg, _arguments || [])).next());
  });
}
var BulkEvaluationStatus;
(function(BulkEvaluationStatus2) {
  BulkEvaluationStatus2["SUCCESS_NO_CHANGES"] = "SUCCESS_NO_CHANGES";
  BulkEvaluationStatus2["SUCCESS_WITH_CHANGES"] = "SUCCESS_WITH_CHANGES";
})(BulkEvaluationStatus || (BulkEvaluationStatus = {}));
var DEFAULT_CACHE_TTL_SECONDS = 30 * 24 * 60 * 60;
var AUTH_HEADER_NAMES = /* @__PURE__ */ new Set([
  "authorization",
  "api-key",
  "x-api-key",
  "x-auth-token",
  "x-access-token"
]);
function isAuthHeader(name) {
  return AUTH_HEADER_NAMES.has(name.toLowerCase());
}
function deriveAuthCredential(options) {
  return __awaiter2(this, void 0, void 0, function* () {
    var _a, _b, _c;
    const entries = [...(_a = options.headers) !== null && _a !== void 0 ? _a : [], ...(_c = yield (_b = options.headersFactory) === null || _b === void 0 ? void 0 : _b.call(options)) !== null && _c !== void 0 ? _c : []];
    const authHeaders = entries.filter(([name]) => isAuthHeader(name)).map(([name, value]) => [name.toLowerCase(), value]).sort(([a], [b]) => a.localeCompare(b));
    return JSON.stringify(authHeaders);
  });
}
function defaultCacheKeyGenerator(input) {
  var _a, _b, _c;
  return JSON.stringify([input.url, (_a = input.auth) !== null && _a !== void 0 ? _a : "", (_b = input.domain) !== null && _b !== void 0 ? _b : "", (_c = input.targetingKey) !== null && _c !== void 0 ? _c : ""]);
}
var SCHEMA_VERSION = 2;
var STORAGE_NS = "ofrep-web-provider";
var Storage = class {
  constructor(cacheMode = "local-cache-first", baseUrl, getAuthCredential, domain, cacheKeyGenerator = defaultCacheKeyGenerator, logger) {
    this._disabled = cacheMode === "disabled";
    this._baseUrl = baseUrl;
    this._getAuthCredential = getAuthCredential;
    this._domain = domain;
    this._cacheKeyGenerator = cacheKeyGenerator;
    this._logger = logger;
  }
  get disabled() {
    return this._disabled;
  }
  _cacheKeyMaterial(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      const auth = yield this._getAuthCredential();
      return this._cacheKeyGenerator({
        url: this._baseUrl,
        auth: auth === "[]" ? void 0 : auth,
        domain: this._domain || void 0,
        targetingKey: context.targetingKey,
        context
      });
    });
  }
  /**
   * Hashes the ADR-0009 cache key material to a 16-char hex string.
   * Uses SHA-256 via crypto.subtle when available (secure contexts).
   * Falls back to a double-pass FNV-1a-32 in non-secure contexts where crypto.subtle is absent.
   */
  _hashInput(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      const input = yield this._cacheKeyMaterial(context);
      if (typeof crypto !== "undefined" && crypto.subtle) {
        const encoded = new TextEncoder().encode(input);
        const hashBuffer = yield crypto.subtle.digest("SHA-256", encoded);
        const hashArray = Array.from(new Uint8Array(hashBuffer));
        return hashArray.map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
      }
      return this._fnvHash(input);
    });
  }
  /**
   * Double-pass FNV-1a-32 producing a 16-char hex string.
   * Used as a fallback when crypto.subtle is unavailable (non-secure contexts).
   */
  _fnvHash(input) {
    const fnv1a32 = (str, offset) => {
      let h = offset >>> 0;
      for (let i = 0; i < str.length; i++) {
        h ^= str.charCodeAt(i);
        h = Math.imul(h, 16777619) >>> 0;
      }
      return h;
    };
    const lo = fnv1a32(input, 2166136261);
    const hi = fnv1a32(input, 668265263);
    return lo.toString(16).padStart(8, "0") + hi.toString(16).padStart(8, "0");
  }
  _formatStorageKey(cacheKeyHash) {
    return `${STORAGE_NS}:v${SCHEMA_VERSION}:${cacheKeyHash}`;
  }
  /**
   * Returns the localStorage key for the given evaluation context.
   * Format: `ofrep-web-provider:v{version}:{hash}`
   */
  getStorageKey(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      return this._formatStorageKey(yield this._hashInput(context));
    });
  }
  /**
   * Persists the flag cache alongside its ETag and a write timestamp.
   * No-op when cacheMode is 'disabled'. Storage write failures are logged and swallowed
   * so the provider continues operating with the fresh in-memory values.
   */
  store(context, flags, etag, metadata, eventStreams) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a;
      if (this._disabled)
        return;
      try {
        const cacheKeyHash = yield this._hashInput(context);
        const key = this._formatStorageKey(cacheKeyHash);
        const entry = Object.assign(Object.assign({
          version: SCHEMA_VERSION,
          cacheKeyHash,
          etag,
          writtenAt: (/* @__PURE__ */ new Date()).toISOString(),
          data: flags
        }, metadata !== void 0 && { metadata }), eventStreams !== void 0 && { eventStreams });
        localStorage.setItem(key, JSON.stringify(entry));
      } catch (error) {
        (_a = this._logger) === null || _a === void 0 ? void 0 : _a.error(`Error storing flag cache in local storage: ${error}`);
      }
    });
  }
  /**
   * Loads a previously persisted entry.
   * Returns `undefined` when:
   *  - cacheMode is 'disabled'
   *  - no entry exists for this context
   *  - the schema version does not match
   *  - the entry is older than `ttlSeconds` (expired entries are removed from storage)
   */
  retrieve(context, ttlSeconds) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a;
      if (this._disabled)
        return void 0;
      try {
        const raw = localStorage.getItem(yield this.getStorageKey(context));
        if (!raw)
          return void 0;
        const entry = JSON.parse(raw);
        if (entry.version !== SCHEMA_VERSION)
          return void 0;
        const writtenAt = new Date(entry.writtenAt).getTime();
        if (Number.isNaN(writtenAt) || Date.now() - writtenAt > ttlSeconds * 1e3) {
          yield this.clear(context);
          return void 0;
        }
        return { flags: entry.data, etag: entry.etag, metadata: entry.metadata, eventStreams: entry.eventStreams };
      } catch (error) {
        (_a = this._logger) === null || _a === void 0 ? void 0 : _a.error(`Error retrieving flag cache from local storage: ${error}`);
        return void 0;
      }
    });
  }
  /**
   * Removes the persisted entry for the given evaluation context.
   * No-op when cacheMode is 'disabled'.
   */
  clear(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a;
      if (this._disabled)
        return;
      try {
        localStorage.removeItem(yield this.getStorageKey(context));
      } catch (error) {
        (_a = this._logger) === null || _a === void 0 ? void 0 : _a.error(`Error clearing flag cache from local storage: ${error}`);
      }
    });
  }
};
var DEFAULT_INACTIVITY_DELAY_SEC = 120;
var DEFAULT_GRACE_PERIOD_SEC = 30;
var DEBOUNCE_MS = 50;
var ES_CLOSED = 2;
var defaultSseEventParser = (event) => typeof event.data === "string" ? JSON.parse(event.data) : event.data;
function resolveUrl(stream, baseUrl) {
  var _a;
  if (stream.url) {
    return stream.url;
  }
  if (stream.endpoint) {
    const origin = (_a = stream.endpoint.origin) !== null && _a !== void 0 ? _a : baseUrl ? new URL(baseUrl).origin : void 0;
    if (!origin) {
      return void 0;
    }
    return new URL(stream.endpoint.requestUri, origin).href;
  }
  return void 0;
}
var SseManager = class {
  constructor(_callbacks, _clientInactivityOverride, _logger, _baseUrl, _EventSourceImpl = EventSource, _parseEvent = defaultSseEventParser) {
    this._callbacks = _callbacks;
    this._clientInactivityOverride = _clientInactivityOverride;
    this._logger = _logger;
    this._baseUrl = _baseUrl;
    this._EventSourceImpl = _EventSourceImpl;
    this._parseEvent = _parseEvent;
    this._connections = [];
    this._urls = /* @__PURE__ */ new Set();
    this._disposed = false;
    this._stale = false;
    this._inactivityDelaySec = _clientInactivityOverride !== null && _clientInactivityOverride !== void 0 ? _clientInactivityOverride : DEFAULT_INACTIVITY_DELAY_SEC;
  }
  /**
   * Connect to SSE endpoints from eventStreams entries.
   * When the resolved URLs are identical to the current active connections, existing
   * connections are reused to avoid brief dark windows where events could be missed.
   */
  connect(eventStreams) {
    var _a, _b, _c;
    const sseStreams = eventStreams.filter((s) => s.type === "sse");
    if (sseStreams.length === 0) {
      this.disconnect();
      return;
    }
    const serverInactivity = (_a = sseStreams.find((s) => s.inactivityDelaySec != null)) === null || _a === void 0 ? void 0 : _a.inactivityDelaySec;
    this._inactivityDelaySec = (_c = (_b = this._clientInactivityOverride) !== null && _b !== void 0 ? _b : serverInactivity) !== null && _c !== void 0 ? _c : DEFAULT_INACTIVITY_DELAY_SEC;
    const urls = sseStreams.reduce((acc, stream) => {
      const url = resolveUrl(stream, this._baseUrl);
      if (url)
        acc.add(url);
      return acc;
    }, /* @__PURE__ */ new Set());
    if (urls.size === 0) {
      this.disconnect();
      return;
    }
    const urlsUnchanged = this._connections.length > 0 && urls.size === this._urls.size && [...urls].every((u) => this._urls.has(u));
    if (urlsUnchanged) {
      return;
    }
    this.disconnect();
    this._urls = urls;
    urls.forEach((url) => this._connectToUrl(url));
    this._setupVisibilityHandler();
  }
  /**
   * Close all EventSource connections and clean up timers.
   */
  disconnect() {
    this._clearDebounce();
    this._clearInactivityTimer();
    this._clearGracePeriod();
    this._stale = false;
    this._removeVisibilityHandler();
    for (const conn of this._connections) {
      conn.close();
    }
    this._connections = [];
    this._urls = /* @__PURE__ */ new Set();
  }
  /**
   * Full cleanup — disconnect and mark as disposed.
   */
  dispose() {
    this._disposed = true;
    this.disconnect();
  }
  /**
   * Whether the manager has active connections.
   */
  get isConnected() {
    return this._connections.length > 0;
  }
  /**
   * The set of currently connected URLs.
   */
  get connectedUrls() {
    return this._urls;
  }
  _connectToUrl(url) {
    if (this._disposed) {
      return;
    }
    const es = new this._EventSourceImpl(url);
    es.addEventListener("open", () => {
      if (this._stale) {
        this._clearGracePeriod();
        this._stale = false;
      }
    });
    es.addEventListener("message", (event) => {
      this._handleMessage(event);
    });
    es.addEventListener("error", () => {
      this._handleError(es);
    });
    this._connections.push(es);
  }
  _handleError(es) {
    var _a, _b;
    if (es.readyState === ES_CLOSED) {
      (_a = this._logger) === null || _a === void 0 ? void 0 : _a.warn("SSE connection closed permanently");
      this._clearGracePeriod();
      this._stale = false;
      this._connections = [];
      this._urls = /* @__PURE__ */ new Set();
      this._callbacks.onError();
      return;
    }
    if (!this._stale) {
      this._stale = true;
      (_b = this._logger) === null || _b === void 0 ? void 0 : _b.info("SSE connection interrupted \u2014 entering grace period");
      this._callbacks.onStale();
      this._gracePeriodTimerId = setTimeout(() => {
        var _a2;
        (_a2 = this._logger) === null || _a2 === void 0 ? void 0 : _a2.warn("SSE grace period expired \u2014 giving up");
        this._stale = false;
        for (const conn of this._connections) {
          conn.close();
        }
        this._connections = [];
        this._urls = /* @__PURE__ */ new Set();
        this._callbacks.onError();
      }, DEFAULT_GRACE_PERIOD_SEC * 1e3);
    }
  }
  _handleMessage(event) {
    var _a;
    if (this._stale) {
      this._clearGracePeriod();
      this._stale = false;
    }
    try {
      const data = this._parseEvent(event);
      if (data.type !== "refetchEvaluation") {
        return;
      }
      const metadata = {};
      if (data.etag) {
        metadata.flagConfigEtag = data.etag;
      }
      if (data.lastModified !== void 0) {
        metadata.flagConfigLastModified = data.lastModified;
      }
      this._pendingMetadata = metadata;
      this._clearDebounce();
      this._debounceTimerId = setTimeout(() => {
        const meta = this._pendingMetadata;
        this._pendingMetadata = void 0;
        this._callbacks.onRefetch(meta);
      }, DEBOUNCE_MS);
    } catch (_b) {
      (_a = this._logger) === null || _a === void 0 ? void 0 : _a.warn("Failed to parse SSE event data");
    }
  }
  _setupVisibilityHandler() {
    if (typeof document === "undefined") {
      return;
    }
    this._visibilityHandler = () => {
      if (document.visibilityState === "hidden") {
        this._startInactivityTimer();
      } else {
        this._cancelInactivityTimer();
      }
    };
    document.addEventListener("visibilitychange", this._visibilityHandler);
  }
  _removeVisibilityHandler() {
    if (this._visibilityHandler && typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", this._visibilityHandler);
      this._visibilityHandler = void 0;
    }
  }
  _startInactivityTimer() {
    this._clearInactivityTimer();
    this._inactivityTimerId = setTimeout(() => {
      var _a;
      (_a = this._logger) === null || _a === void 0 ? void 0 : _a.info("SSE inactivity timeout \u2014 closing connections");
      for (const conn of this._connections) {
        conn.close();
      }
      this._connections = [];
    }, this._inactivityDelaySec * 1e3);
  }
  _cancelInactivityTimer() {
    var _a;
    if (this._inactivityTimerId !== void 0) {
      clearTimeout(this._inactivityTimerId);
      this._inactivityTimerId = void 0;
      if (this._connections.length === 0 && this._urls.size > 0) {
        (_a = this._logger) === null || _a === void 0 ? void 0 : _a.info("SSE resuming \u2014 reconnecting and requesting full re-fetch");
        for (const url of this._urls) {
          this._connectToUrl(url);
        }
        this._callbacks.onRefetch(void 0);
      }
    }
  }
  _clearInactivityTimer() {
    if (this._inactivityTimerId !== void 0) {
      clearTimeout(this._inactivityTimerId);
      this._inactivityTimerId = void 0;
    }
  }
  _clearDebounce() {
    if (this._debounceTimerId !== void 0) {
      clearTimeout(this._debounceTimerId);
      this._debounceTimerId = void 0;
    }
  }
  _clearGracePeriod() {
    if (this._gracePeriodTimerId !== void 0) {
      clearTimeout(this._gracePeriodTimerId);
      this._gracePeriodTimerId = void 0;
    }
  }
};
var OFREPWebProvider = class {
  constructor(options, logger) {
    var _a, _b, _c;
    this.DEFAULT_POLL_INTERVAL = 0;
    this.metadata = {
      name: "OpenFeature Remote Evaluation Protocol Web Provider"
    };
    this.runsOn = "client";
    this.domainScoped = true;
    this.events = new OpenFeatureEventEmitter();
    this._flagCache = {};
    this._contextRevision = 0;
    this._isFetching = false;
    this._visibilityChangeHandler = this._onVisibilityChange.bind(this);
    this._sseRetryCount = 0;
    this._options = options;
    this._logger = logger;
    this._etag = null;
    this._ofrepAPI = new OFREPApi(this._options, this._options.fetchImplementation);
    this._pollingInterval = (_a = this._options.pollInterval) !== null && _a !== void 0 ? _a : this.DEFAULT_POLL_INTERVAL;
    this._cacheMode = (_b = this._options.cacheMode) !== null && _b !== void 0 ? _b : "local-cache-first";
    this._cacheTTL = (_c = this._options.cacheTTL) !== null && _c !== void 0 ? _c : DEFAULT_CACHE_TTL_SECONDS;
    this._isUsingCache = false;
  }
  /**
   * Returns a shallow copy of the flag cache, which is updated at initialization/context-change/configuration-change once the flags are re-evaluated.
   */
  get flagCache() {
    return Object.assign({}, this._flagCache);
  }
  /**
   * Initialize the provider, it will evaluate the flags and start the polling if it is not disabled.
   * @param context - the context to use for the evaluation
   * @param domain - the bound OpenFeature domain, if any
   */
  initialize(context, domain) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b, _c;
      try {
        this._storage = new Storage(this._cacheMode, this._options.baseUrl, () => deriveAuthCredential(this._options), domain !== null && domain !== void 0 ? domain : "", (_a = this._options.cacheKeyGenerator) !== null && _a !== void 0 ? _a : defaultCacheKeyGenerator, this._logger);
        this._context = context;
        let result;
        if (this._cacheMode === "network-first") {
          result = yield this._initNetworkFirst(context);
        } else {
          const loadedFromCache = yield this._tryLoadFlagsFromCache(context);
          if (!loadedFromCache) {
            result = yield this._fetchFlags(context);
          }
        }
        if (result) {
          this._connectSseIfAvailable(result);
        }
        const changeDetection = (_b = this._options.changeDetection) !== null && _b !== void 0 ? _b : "sse";
        if (!this._sseManager && this._pollingInterval > 0 && changeDetection !== "none") {
          this.startPolling();
        }
        if (!this._options.disableVisibilityRefresh && typeof document !== "undefined") {
          document.addEventListener("visibilitychange", this._visibilityChangeHandler);
        }
        (_c = this._logger) === null || _c === void 0 ? void 0 : _c.debug(`${this.metadata.name} initialized successfully`);
      } catch (error) {
        if (error instanceof OFREPApiUnauthorizedError || error instanceof OFREPForbiddenError) {
          throw new ProviderFatalError("Initialization failed", { cause: error });
        }
        throw error;
      }
    });
  }
  /* eslint-disable @typescript-eslint/no-unused-vars*/
  /* to make overrides easier we keep these unused vars */
  resolveBooleanEvaluation(flagKey, defaultValue, context) {
    return this._resolve(flagKey, defaultValue);
  }
  resolveStringEvaluation(flagKey, defaultValue, context) {
    return this._resolve(flagKey, defaultValue);
  }
  resolveNumberEvaluation(flagKey, defaultValue, context) {
    return this._resolve(flagKey, defaultValue);
  }
  resolveObjectEvaluation(flagKey, defaultValue, context) {
    return this._resolve(flagKey, defaultValue);
  }
  /**
   * onContextChange is called when the context changes, it will re-evaluate the flags with the new context
   * and update the cache.
   * @param oldContext - the old evaluation context
   * @param newContext - the new evaluation context
   */
  onContextChange(oldContext, newContext) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b, _c, _d, _e, _f, _g;
      this._contextRevision++;
      try {
        if ((oldContext === null || oldContext === void 0 ? void 0 : oldContext.targetingKey) !== (newContext === null || newContext === void 0 ? void 0 : newContext.targetingKey)) {
          this._etag = null;
          void ((_a = this._storage) === null || _a === void 0 ? void 0 : _a.clear(oldContext));
        }
        this._context = newContext;
        const now = /* @__PURE__ */ new Date();
        if (this._retryPollingAfter !== void 0 && this._retryPollingAfter > now) {
          return;
        }
        const loadedFromCache = this._cacheMode === "local-cache-first" ? yield this._tryLoadFlagsFromCache(newContext) : false;
        if (!loadedFromCache) {
          const result = yield this._fetchFlags(newContext);
          this._connectSseIfAvailable(result);
          const changeDetection = (_b = this._options.changeDetection) !== null && _b !== void 0 ? _b : "sse";
          if (!this._sseManager && this._pollingInterval > 0 && !this._pollingIntervalId && changeDetection !== "none") {
            this.startPolling();
          }
        }
      } catch (error) {
        if (error instanceof OFREPApiTooManyRequestsError) {
          (_c = this.events) === null || _c === void 0 ? void 0 : _c.emit(ClientProviderEvents.Stale, { message: `${error.name}: ${error.message}` });
          return;
        }
        if (error instanceof OFREPApiUnauthorizedError || error instanceof OFREPForbiddenError) {
          (_d = this._logger) === null || _d === void 0 ? void 0 : _d.error(`Auth/config error during context change: ${error.name}: ${error.message}`);
          (_e = this.events) === null || _e === void 0 ? void 0 : _e.emit(ClientProviderEvents.Error, { message: `${error.name}: ${error.message}` });
          return;
        }
        if (error instanceof OpenFeatureError || error instanceof OFREPApiFetchError || error instanceof OFREPApiUnexpectedResponseError) {
          (_f = this.events) === null || _f === void 0 ? void 0 : _f.emit(ClientProviderEvents.Error, {
            message: `${error.name}: ${error.message}`
          });
          return;
        }
        (_g = this.events) === null || _g === void 0 ? void 0 : _g.emit(ClientProviderEvents.Error, { message: `Unknown error: ${error}` });
      }
    });
  }
  /**
   * onClose is called when the provider is closed, it will stop the polling if it is enabled.
   */
  onClose() {
    var _a;
    this.stopPolling();
    this._clearSseRetry();
    if (typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", this._visibilityChangeHandler);
    }
    (_a = this._sseManager) === null || _a === void 0 ? void 0 : _a.dispose();
    this._sseManager = void 0;
    this._storage = void 0;
    this._ofrepAPI.close();
    return Promise.resolve();
  }
  /**
   * network-first initialization: block on the network request; fall back to the persisted
   * cache only on transient or server errors (5xx, network unavailable, timeout).
   * Auth and configuration errors (401, 403, 400, 404) are never masked by cached values.
   */
  _initNetworkFirst(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b, _c;
      try {
        return yield this._fetchFlags(context);
      } catch (error) {
        const status = error instanceof OFREPApiError ? (_a = error.response) === null || _a === void 0 ? void 0 : _a.status : void 0;
        if (error instanceof OFREPApiUnauthorizedError || error instanceof OFREPForbiddenError || error instanceof OpenFeatureError || status === 400 || status === 404) {
          throw error;
        }
        const cached = yield (_b = this._storage) === null || _b === void 0 ? void 0 : _b.retrieve(context !== null && context !== void 0 ? context : {}, this._cacheTTL);
        if (!cached) {
          throw error;
        }
        this._isUsingCache = true;
        this._flagCache = cached.flags;
        this._etag = cached.etag;
        if (cached.metadata) {
          this._flagSetMetadataCache = cached.metadata;
        }
        this._eventStreams = cached.eventStreams;
        return ((_c = this._eventStreams) === null || _c === void 0 ? void 0 : _c.length) ? { status: BulkEvaluationStatus.SUCCESS_NO_CHANGES, flags: [], eventStreams: this._eventStreams } : void 0;
      }
    });
  }
  /**
   * _fetchFlags is a function that will call the bulk evaluate flags endpoint to get the flags values.
   * @param context - the context to use for the evaluation
   * @private
   * @returns EvaluationStatus if the evaluation the API returned a 304, 200.
   * @throws TargetingKeyMissingError if the API returned a 400 with the error code TargetingKeyMissing
   * @throws InvalidContextError if the API returned a 400 with the error code InvalidContext
   * @throws ParseError if the API returned a 400 with the error code ParseError
   * @throws GeneralError if the API returned a 400 with an unknown error code
   */
  _fetchFlags(context_1) {
    return __awaiter2(this, arguments, void 0, function* (context, generation = this._contextRevision, sseMetadata, unconditional) {
      var _a, _b, _c;
      try {
        const evalReq = {
          context
        };
        const etag = unconditional ? null : this._etag;
        const response = yield this._ofrepAPI.postBulkEvaluateFlags(evalReq, etag, sseMetadata);
        if (response.httpStatus === 304) {
          return { status: BulkEvaluationStatus.SUCCESS_NO_CHANGES, flags: [], eventStreams: this._eventStreams };
        }
        if (response.httpStatus !== 200) {
          throw new GeneralError(`Failed OFREP bulk evaluation request, status: ${response.httpStatus}`);
        }
        const bulkSuccessResp = response.value;
        if (!("flags" in bulkSuccessResp) || !Array.isArray(bulkSuccessResp.flags)) {
          throw new Error("No flags in OFREP bulk evaluation response");
        }
        const newCache = bulkSuccessResp.flags.reduce((currentCache, currentResponse) => {
          if (currentResponse.key) {
            currentCache[currentResponse.key] = currentResponse;
          }
          return currentCache;
        }, {});
        if (generation !== this._contextRevision) {
          return { status: BulkEvaluationStatus.SUCCESS_NO_CHANGES, flags: [] };
        }
        const listUpdatedFlags = this._getListUpdatedFlags(this._flagCache, newCache);
        this._flagCache = newCache;
        this._eventStreams = bulkSuccessResp.eventStreams;
        const newEtag = (_b = (_a = response.httpResponse) === null || _a === void 0 ? void 0 : _a.headers.get("etag")) !== null && _b !== void 0 ? _b : null;
        this._flagSetMetadataCache = toFlagMetadata(typeof bulkSuccessResp.metadata === "object" ? bulkSuccessResp.metadata : {});
        yield (_c = this._storage) === null || _c === void 0 ? void 0 : _c.store(context !== null && context !== void 0 ? context : {}, newCache, newEtag, this._flagSetMetadataCache, this._eventStreams);
        this._etag = newEtag;
        this._isUsingCache = false;
        return {
          status: BulkEvaluationStatus.SUCCESS_WITH_CHANGES,
          flags: listUpdatedFlags,
          eventStreams: bulkSuccessResp.eventStreams
        };
      } catch (error) {
        if (error instanceof OFREPApiTooManyRequestsError && error.retryAfterDate !== null) {
          this._retryPollingAfter = error.retryAfterDate;
        }
        throw error;
      }
    });
  }
  /**
   * _getListUpdatedFlags is a function that will compare the old cache with the new cache and
   * return the list of flags that have been updated / deleted / created.
   * @param oldCache
   * @param newCache
   * @private
   */
  _getListUpdatedFlags(oldCache, newCache) {
    const changedKeys = [];
    const oldKeys = Object.keys(oldCache);
    const newKeys = Object.keys(newCache);
    for (const key in newCache) {
      if (oldKeys.indexOf(key) === -1 || JSON.stringify(oldCache[key]) !== JSON.stringify(newCache[key])) {
        changedKeys.push(key);
      }
    }
    for (const key in oldCache) {
      if (newKeys.indexOf(key) === -1) {
        changedKeys.push(key);
      }
    }
    return changedKeys;
  }
  /**
   * _resolve is a function retrieving the value from a flag in the cache.
   * @param flagKey - name of the flag to retrieve
   * @param type - type of the flag
   * @param defaultValue - default value
   * @private
   */
  _resolve(flagKey, defaultValue) {
    const resolved = this._flagCache[flagKey];
    if (!resolved) {
      return {
        value: defaultValue,
        flagMetadata: this._flagSetMetadataCache,
        reason: StandardResolutionReasons.ERROR,
        errorCode: ErrorCode.FLAG_NOT_FOUND,
        errorMessage: ErrorMessageMap[ErrorCode.FLAG_NOT_FOUND]
      };
    }
    return this.responseToResolutionDetails(resolved, defaultValue);
  }
  responseToResolutionDetails(response, defaultValue) {
    if (isEvaluationFailureResponse(response)) {
      return handleEvaluationError(response, defaultValue);
    }
    const resolution = toResolutionDetails(response, defaultValue);
    if (this._isUsingCache) {
      resolution.reason = StandardResolutionReasons.CACHED;
    }
    return resolution;
  }
  /**
   * Fetches flags and emits the appropriate events based on the result.
   * Uses a concurrency guard to prevent overlapping requests.
   * @param reason - a short description of what triggered the refresh (used in event messages)
   * @private
   */
  _refreshFlags(reason_1) {
    return __awaiter2(this, arguments, void 0, function* (reason, emitStaleOnError = true) {
      var _a, _b, _c;
      if (this._isFetching) {
        return;
      }
      const now = /* @__PURE__ */ new Date();
      if (this._retryPollingAfter !== void 0 && this._retryPollingAfter > now) {
        return;
      }
      this._isFetching = true;
      try {
        const res = yield this._fetchFlags(this._context);
        if (res.status === BulkEvaluationStatus.SUCCESS_WITH_CHANGES) {
          (_a = this.events) === null || _a === void 0 ? void 0 : _a.emit(ClientProviderEvents.ConfigurationChanged, {
            message: `Flags updated (${reason})`,
            flagsChanged: res.flags
          });
        }
      } catch (error) {
        if (emitStaleOnError) {
          (_b = this.events) === null || _b === void 0 ? void 0 : _b.emit(ClientProviderEvents.Stale, {
            message: `Error while refreshing flags (${reason}): ${error}`
          });
        } else {
          (_c = this._logger) === null || _c === void 0 ? void 0 : _c.warn(`Error while refreshing flags (${reason}): ${error}`);
        }
      } finally {
        this._isFetching = false;
      }
    });
  }
  /**
   * Connect to SSE event streams if present in the response.
   * If SSE connects, stop polling; if no SSE, does not start polling
   * (that is handled by the caller).
   */
  _connectSseIfAvailable(result) {
    var _a, _b;
    const changeDetection = (_a = this._options.changeDetection) !== null && _a !== void 0 ? _a : "sse";
    if (result.eventStreams && result.eventStreams.length > 0 && changeDetection === "sse") {
      if (!this._sseManager && typeof EventSource === "undefined") {
        (_b = this._logger) === null || _b === void 0 ? void 0 : _b.debug("EventSource is unavailable; skipping SSE connection");
        return;
      }
      this.stopPolling();
      this._clearSseRetry();
      if (!this._sseManager) {
        this._sseManager = new SseManager(
          {
            onRefetch: (metadata) => this._handleSseRefetch(metadata),
            onStale: () => this._handleSseStale(),
            onError: () => this._handleSseError()
          },
          this._options.inactivityDelaySec,
          this._logger,
          this._options.baseUrl,
          // Leave EventSource implementation as the default; only tests inject a mock
          void 0,
          this._options.sseEventParser
        );
      }
      this._sseManager.connect(result.eventStreams);
      this._sseRetryCount = 0;
    } else if (this._sseManager) {
      this._sseManager.dispose();
      this._sseManager = void 0;
    }
  }
  /**
   * Handle an SSE refetchEvaluation event.
   */
  _handleSseRefetch(metadata) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b;
      try {
        const isInactivityResume = metadata === void 0;
        const res = yield this._fetchFlags(this._context, void 0, metadata, isInactivityResume);
        if (res.status === BulkEvaluationStatus.SUCCESS_WITH_CHANGES) {
          (_a = this.events) === null || _a === void 0 ? void 0 : _a.emit(ClientProviderEvents.ConfigurationChanged, {
            message: "Flags updated",
            flagsChanged: res.flags
          });
        }
      } catch (error) {
        (_b = this.events) === null || _b === void 0 ? void 0 : _b.emit(ClientProviderEvents.Stale, { message: `Error during SSE re-fetch: ${error}` });
      }
    });
  }
  /**
   * Handle SSE transient errors — emit stale while EventSource auto-reconnects.
   */
  _handleSseStale() {
    var _a;
    (_a = this.events) === null || _a === void 0 ? void 0 : _a.emit(ClientProviderEvents.Stale, {
      message: "SSE connection interrupted \u2014 attempting to reconnect"
    });
  }
  /**
   * Handle SSE connection errors.
   * Falls back to polling when enabled; otherwise retries SSE with exponential backoff.
   */
  _handleSseError() {
    var _a, _b, _c;
    if (!this._sseManager) {
      return;
    }
    if (this._pollingInterval > 0 && !this._pollingIntervalId) {
      (_a = this._logger) === null || _a === void 0 ? void 0 : _a.info("SSE error \u2014 falling back to polling");
      this._sseManager.dispose();
      this._sseManager = void 0;
      this.startPolling();
      return;
    }
    const changeDetection = (_b = this._options.changeDetection) !== null && _b !== void 0 ? _b : "sse";
    if (this._pollingInterval <= 0 && changeDetection !== "none") {
      const delayMs = Math.min(1e3 * Math.pow(2, this._sseRetryCount), 6e4);
      this._sseRetryCount++;
      (_c = this._logger) === null || _c === void 0 ? void 0 : _c.info(`SSE error \u2014 polling disabled, retrying SSE in ${delayMs}ms (attempt ${this._sseRetryCount})`);
      this._sseRetryTimerId = setTimeout(() => __awaiter2(this, void 0, void 0, function* () {
        var _a2;
        this._sseRetryTimerId = void 0;
        try {
          const result = yield this._fetchFlags(this._context);
          this._connectSseIfAvailable(result);
        } catch (error) {
          (_a2 = this._logger) === null || _a2 === void 0 ? void 0 : _a2.warn(`SSE retry fetchFlags failed: ${error} \u2014 scheduling next attempt`);
          this._handleSseError();
        }
      }), delayMs);
    }
  }
  _clearSseRetry() {
    if (this._sseRetryTimerId !== void 0) {
      clearTimeout(this._sseRetryTimerId);
      this._sseRetryTimerId = void 0;
    }
  }
  /**
   * Start polling for flag updates, it will call the bulk update function every pollInterval
   * @private
   */
  startPolling() {
    this._pollingIntervalId = setInterval(() => {
      this._refreshFlags("polling");
    }, this._pollingInterval);
  }
  _refreshFlagsInBackground() {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b, _c, _d, _e;
      const now = /* @__PURE__ */ new Date();
      if (this._retryPollingAfter !== void 0 && this._retryPollingAfter > now) {
        return;
      }
      try {
        const res = yield this._fetchFlags(this._context);
        if (res.status === BulkEvaluationStatus.SUCCESS_WITH_CHANGES) {
          this._connectSseIfAvailable(res);
          (_a = this.events) === null || _a === void 0 ? void 0 : _a.emit(ClientProviderEvents.ConfigurationChanged, {
            message: "Flags updated",
            flagsChanged: res.flags
          });
        }
      } catch (error) {
        if (error instanceof OFREPApiTooManyRequestsError) {
          (_b = this.events) === null || _b === void 0 ? void 0 : _b.emit(ClientProviderEvents.Stale, { message: `${error.name}: ${error.message}` });
          return;
        }
        if (error instanceof OFREPApiUnauthorizedError || error instanceof OFREPForbiddenError) {
          (_c = this._logger) === null || _c === void 0 ? void 0 : _c.error(`Auth/config error during background refresh: ${error.name}: ${error.message}`);
          (_d = this.events) === null || _d === void 0 ? void 0 : _d.emit(ClientProviderEvents.Error, { message: `${error.name}: ${error.message}` });
          return;
        }
        (_e = this.events) === null || _e === void 0 ? void 0 : _e.emit(ClientProviderEvents.Stale, { message: `Error while polling: ${error}` });
      }
    });
  }
  _tryLoadFlagsFromCache(context) {
    return __awaiter2(this, void 0, void 0, function* () {
      var _a, _b;
      const cached = yield (_a = this._storage) === null || _a === void 0 ? void 0 : _a.retrieve(context !== null && context !== void 0 ? context : {}, this._cacheTTL);
      if (cached) {
        this._isUsingCache = true;
        this._flagCache = cached.flags;
        this._etag = cached.etag;
        if (cached.metadata) {
          this._flagSetMetadataCache = cached.metadata;
        }
        this._eventStreams = cached.eventStreams;
        if ((_b = this._eventStreams) === null || _b === void 0 ? void 0 : _b.length) {
          this._connectSseIfAvailable({
            status: BulkEvaluationStatus.SUCCESS_NO_CHANGES,
            flags: [],
            eventStreams: this._eventStreams
          });
        }
        void this._refreshFlagsInBackground();
        return true;
      }
      return false;
    });
  }
  stopPolling() {
    if (this._pollingIntervalId) {
      clearInterval(this._pollingIntervalId);
      this._pollingIntervalId = void 0;
    }
  }
  /**
   * Handler for visibility changes (page/app becoming visible)
   * Re-fetches flags when the document becomes visible
   * @private
   */
  _onVisibilityChange() {
    if ((document === null || document === void 0 ? void 0 : document.visibilityState) === "visible") {
      this._refreshFlags("visibility change", false);
    }
  }
};

// page.js
var DETAILS = {
  boolean: (client, key) => client.getBooleanDetails(key, false),
  string: (client, key) => client.getStringDetails(key, ""),
  number: (client, key) => client.getNumberDetails(key, 0),
  object: (client, key) => client.getObjectDetails(key, {})
};
window.flagportPage = {
  events: [],
  async start({ baseUrl, context, pollInterval = 0, changeDetection = "sse", token = null }) {
    for (const type of [
      ClientProviderEvents.Ready,
      ClientProviderEvents.ConfigurationChanged,
      ClientProviderEvents.Stale,
      ClientProviderEvents.Error
    ]) {
      OpenFeature.addHandler(type, (details) => {
        this.events.push({
          type,
          flagsChanged: details?.flagsChanged ?? null,
          message: details?.message ?? null,
          at: Date.now()
        });
      });
    }
    const options = { baseUrl, pollInterval, changeDetection };
    if (token) {
      options.headers = [["Authorization", `Bearer ${token}`]];
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
        errorCode: found.errorCode ?? null
      };
    }
    return out;
  }
};
