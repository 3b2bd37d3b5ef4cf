<?php

declare(strict_types=1);

namespace Flagport\Store;

/**
 * A small key-value store for state that should outlive one PHP request: the last good
 * answers and the circuit breaker. APCu shares it between the workers of one PHP-FPM pool;
 * without APCu it lives in the process (useful for CLI workers, lost after an FPM request).
 *
 * Implementations never throw; a store that cannot answer behaves like an empty one.
 */
interface Store
{
    /** The value under `$key`, or null when absent or expired. */
    public function fetch(string $key): mixed;

    /** Store (replace) `$value` under `$key` for `$ttl` seconds (0: no expiry). */
    public function store(string $key, mixed $value, int $ttl): bool;

    /** Store only when `$key` is absent; true when this call stored it (atomic in APCu). */
    public function add(string $key, mixed $value, int $ttl): bool;

    /** Atomically add 1 to the counter under `$key` (created at 1 with `$ttl`); its new value. */
    public function increment(string $key, int $ttl): int;

    public function delete(string $key): void;

    /** Delete every key starting with `$prefix`. */
    public function deletePrefix(string $prefix): void;

    /** Whether other processes (the FPM pool's workers) see the same data. */
    public function isShared(): bool;
}
