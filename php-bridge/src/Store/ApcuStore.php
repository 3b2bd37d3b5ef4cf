<?php

declare(strict_types=1);

namespace Flagport\Store;

/**
 * APCu: shared by every worker of one PHP-FPM pool (each pool has its own segment).
 *
 * Use {@see ApcuStore::available()} first: APCu may be missing, or disabled in the CLI
 * (`apc.enable_cli=0` is PHP's default).
 */
final class ApcuStore implements Store
{
    /** Whether APCu is loaded and enabled for this SAPI. */
    public static function available(): bool
    {
        return function_exists('apcu_enabled') && apcu_enabled();
    }

    public function fetch(string $key): mixed
    {
        $value = apcu_fetch($key, $success);
        return $success ? $value : null;
    }

    public function store(string $key, mixed $value, int $ttl): bool
    {
        return (bool) apcu_store($key, $value, $ttl);
    }

    public function add(string $key, mixed $value, int $ttl): bool
    {
        return (bool) apcu_add($key, $value, $ttl);
    }

    public function increment(string $key, int $ttl): int
    {
        $value = apcu_inc($key, 1, $success, $ttl);
        if ($success && is_int($value)) {
            return $value;
        }
        // Older APCu does not create missing counters: add, then count the race's loser too.
        if (apcu_add($key, 1, $ttl)) {
            return 1;
        }
        $value = apcu_inc($key, 1, $success, $ttl);
        return $success && is_int($value) ? $value : 1;
    }

    public function delete(string $key): void
    {
        apcu_delete($key);
    }

    public function deletePrefix(string $prefix): void
    {
        if (class_exists(\APCUIterator::class)) {
            apcu_delete(new \APCUIterator('/^' . preg_quote($prefix, '/') . '/', APC_ITER_KEY));
        }
    }

    public function isShared(): bool
    {
        return true;
    }
}
