<?php

declare(strict_types=1);

namespace Flagport;

use Flagport\Store\Store;

/**
 * A circuit breaker whose state lives in a {@see Store}, so with APCu every worker of a
 * PHP-FPM pool sees it: after `threshold` failures within `window` seconds the circuit opens
 * and no request touches the network for `cooldown` seconds; then one request (whichever
 * wins an atomic add) probes the server while the others keep skipping. A success closes it.
 *
 * While closed, the cost per request is one store fetch; while open, also one.
 */
final class CircuitBreaker
{
    public const CLOSED = 'closed';
    public const OPEN = 'open';
    public const HALF_OPEN = 'half-open';

    private string $failsKey;
    private string $openKey;
    private string $probeKey;
    private string $logKey;
    private bool $probing = false;

    /**
     * @param Store  $store     where the state lives (APCu: shared by the FPM pool)
     * @param string $name      identifies the endpoint (state is per endpoint)
     * @param int    $threshold failures within `$window` seconds that open the circuit
     * @param float  $cooldown  seconds the circuit stays open before one probe
     * @param int    $window    seconds over which failures are counted
     */
    public function __construct(
        private Store $store,
        string $name,
        private int $threshold = 3,
        private float $cooldown = 5.0,
        private int $window = 30,
    ) {
        $this->failsKey = $name . ':fails';
        $this->openKey = $name . ':open';
        $this->probeKey = $name . ':probe';
        $this->logKey = $name . ':logged';
        $this->threshold = max(1, $threshold);
    }

    /** Whether this request may call the server. */
    public function allow(): bool
    {
        $openUntil = $this->store->fetch($this->openKey);
        if (!is_float($openUntil) && !is_int($openUntil)) {
            return true;
        }
        if (microtime(true) < $openUntil) {
            return false;
        }
        // Cooled down: exactly one request probes; the probe key expires if that one dies.
        if ($this->store->add($this->probeKey, 1, max(1, (int) ceil($this->cooldown)))) {
            $this->probing = true;
            return true;
        }
        return false;
    }

    /** Record a successful call: closes the circuit. */
    public function success(): void
    {
        if ($this->probing || $this->store->fetch($this->failsKey) !== null) {
            $this->store->delete($this->openKey);
            $this->store->delete($this->failsKey);
            $this->store->delete($this->probeKey);
            $this->store->delete($this->logKey);
            $this->probing = false;
        }
    }

    /**
     * Record a failed call.
     *
     * @return bool true when this failure opened (or re-opened) the circuit
     */
    public function failure(): bool
    {
        $fails = $this->store->increment($this->failsKey, $this->window);
        if ($this->probing || $fails >= $this->threshold) {
            $this->store->store($this->openKey, microtime(true) + $this->cooldown, 0);
            $this->store->delete($this->probeKey);
            $this->probing = false;
            return true;
        }
        return false;
    }

    /** True at most once per cool-down across the pool: whether to log this error now. */
    public function shouldLog(): bool
    {
        return $this->store->add($this->logKey, 1, max(1, (int) ceil($this->cooldown)));
    }

    /** The current state, for diagnostics. */
    public function state(): string
    {
        $openUntil = $this->store->fetch($this->openKey);
        if (!is_float($openUntil) && !is_int($openUntil)) {
            return self::CLOSED;
        }
        return microtime(true) < $openUntil ? self::OPEN : self::HALF_OPEN;
    }

    /** Forget all state (tests, or an operator's reset). */
    public function reset(): void
    {
        foreach ([$this->failsKey, $this->openKey, $this->probeKey, $this->logKey] as $key) {
            $this->store->delete($key);
        }
        $this->probing = false;
    }
}
