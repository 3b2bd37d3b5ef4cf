<?php

declare(strict_types=1);

namespace Flagport\Store;

/**
 * Process-wide memory: without APCu the breaker and last-good values still work inside one
 * process (a queue worker, a long CLI command), though not across PHP-FPM requests.
 */
final class MemoryStore implements Store
{
    /** @var array<string, array{0: mixed, 1: float}> key => [value, expires at (0: never)] */
    private static array $data = [];

    public function fetch(string $key): mixed
    {
        if (!isset(self::$data[$key])) {
            return null;
        }
        [$value, $expires] = self::$data[$key];
        if ($expires > 0 && $expires <= microtime(true)) {
            unset(self::$data[$key]);
            return null;
        }
        return $value;
    }

    public function store(string $key, mixed $value, int $ttl): bool
    {
        self::$data[$key] = [$value, $ttl > 0 ? microtime(true) + $ttl : 0.0];
        return true;
    }

    public function add(string $key, mixed $value, int $ttl): bool
    {
        if ($this->fetch($key) !== null) {
            return false;
        }
        return $this->store($key, $value, $ttl);
    }

    public function increment(string $key, int $ttl): int
    {
        $current = $this->fetch($key);
        if (!is_int($current)) {
            $this->store($key, 1, $ttl);
            return 1;
        }
        self::$data[$key][0] = $current + 1;
        return $current + 1;
    }

    public function delete(string $key): void
    {
        unset(self::$data[$key]);
    }

    public function deletePrefix(string $prefix): void
    {
        foreach (array_keys(self::$data) as $key) {
            if (str_starts_with((string) $key, $prefix)) {
                unset(self::$data[$key]);
            }
        }
    }

    public function isShared(): bool
    {
        return false;
    }

    /** Forget everything (tests). */
    public static function flush(): void
    {
        self::$data = [];
    }
}
