<?php

declare(strict_types=1);

namespace Flagport;

/**
 * Fixed flag values and the answers they make (docs/spec.md, "Fixed flag values and local
 * overrides"): what {@see Flagport::fake()} serves and what local overrides put over the
 * server's answers.
 *
 * A value of `false` is a flag that is off: variant `off`, reason `DISABLED`. Any other JSON
 * value (true, a string, a number, an object) is a flag that is on and serves it: variant
 * `on`, reason `STATIC`. A key whose nearest fixed ancestor (`a` for `a.b`) is off is off too,
 * gated by it, as the server's engine serves a hierarchy (so PHP and Python answer alike:
 * tests/spec/overrides/). Answers are OFREP items, the shape the server sends.
 */
final class FixedFlags
{
    public const MAX_FLAGS = 10000;
    private const MAX_KEY_LENGTH = 200;
    private const MAX_DEPTH = 32;
    private const KEY_PATTERN = '/^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$/D';

    /** @var array<string, mixed> */
    private array $values;
    /** @var array<string, array<string, mixed>>|null OFREP items by key, made on first use */
    private ?array $items = null;

    /**
     * @param array<string, mixed> $values flag key => value
     * @throws InvalidOverrides naming the entry (`$["key"]`) of a bad key or value
     */
    public function __construct(array $values = [])
    {
        self::check($values);
        $this->values = $values;
    }

    /**
     * These values with `$values` fixed on top (a key given again takes the new value).
     *
     * @param array<string, mixed> $values
     */
    public function with(array $values): self
    {
        return new self(array_replace($this->values, $values));
    }

    /** @return array<string, mixed> flag key => value */
    public function values(): array
    {
        return $this->values;
    }

    public function has(string $key): bool
    {
        return array_key_exists($key, $this->values);
    }

    /**
     * The answer for every fixed key, as the server would send it in a bulk answer.
     *
     * @return array<string, array<string, mixed>> OFREP items by flag key
     */
    public function items(): array
    {
        if ($this->items !== null) {
            return $this->items;
        }
        $items = [];
        foreach ($this->values as $key => $value) {
            $key = (string) $key;
            $item = ['key' => $key, 'value' => $value, 'variant' => 'on', 'reason' => 'STATIC'];
            if ($value === false) {
                $item = ['key' => $key, 'value' => false, 'variant' => 'off', 'reason' => 'DISABLED'];
            }
            $gate = $this->offAncestor($key);
            if ($gate !== null) {
                $item = ['key' => $key, 'value' => false, 'variant' => 'off', 'reason' => 'DISABLED', 'metadata' => ['gatedBy' => $gate]];
            }
            if (!is_bool($value)) {
                // Values that are not plain on/off booleans say whether they are on, as the
                // server's answers do (`metadata.on`).
                $item['metadata'] = ($item['metadata'] ?? []) + ['on' => $item['variant'] === 'on'];
            }
            $items[$key] = $item;
        }
        return $this->items = $items;
    }

    /** The outermost fixed ancestor of `$key` that is off (it gates `$key` off), or null. */
    private function offAncestor(string $key): ?string
    {
        $parts = explode('.', $key);
        $prefix = '';
        for ($i = 0; $i < count($parts) - 1; $i++) {
            $prefix = $prefix === '' ? $parts[$i] : $prefix . '.' . $parts[$i];
            if (array_key_exists($prefix, $this->values) && $this->values[$prefix] === false) {
                return $prefix;
            }
        }
        return null;
    }

    /**
     * @param array<mixed> $values
     * @throws InvalidOverrides
     */
    private static function check(array $values): void
    {
        if (count($values) > self::MAX_FLAGS) {
            throw new InvalidOverrides(sprintf('%d flags; the limit is %d', count($values), self::MAX_FLAGS));
        }
        foreach ($values as $key => $value) {
            $problem = self::keyProblem($key) ?? self::valueProblem($value, 0);
            if ($problem !== null) {
                throw new InvalidOverrides($problem, (string) $key);
            }
        }
    }

    /** `$["key"]`: where an entry is, as docs/spec.md writes it. */
    public static function entryPath(int|string $key): string
    {
        return '$[' . json_encode((string) $key, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE) . ']';
    }

    private static function keyProblem(int|string $key): ?string
    {
        $key = (string) $key;
        if (strlen($key) > self::MAX_KEY_LENGTH) {
            return sprintf('key is %d characters long; the limit is %d', strlen($key), self::MAX_KEY_LENGTH);
        }
        if (preg_match(self::KEY_PATTERN, $key) !== 1) {
            return 'invalid key ' . var_export($key, true) . ": use dot-separated segments of lowercase letters, digits, '-' and '_', each starting with a letter or digit";
        }
        return null;
    }

    private static function valueProblem(mixed $value, int $depth): ?string
    {
        if ($depth === 0) {
            if ($value === null) {
                return 'null is not a flag value: use false for a flag that is off';
            }
            if (is_array($value) && array_is_list($value) && $value !== []) {
                return 'an array is not a flag value (OFREP allows objects): wrap it in an object';
            }
        }
        if ($depth > self::MAX_DEPTH) {
            return 'the value is nested too deeply';
        }
        if ($value === null || is_bool($value) || is_int($value) || is_string($value)) {
            return null;
        }
        if (is_float($value)) {
            return is_finite($value) ? null : 'the number is out of range';
        }
        if ($value instanceof \stdClass) {
            $value = (array) $value;
        }
        if (is_array($value)) {
            foreach ($value as $item) {
                $problem = self::valueProblem($item, $depth + 1);
                if ($problem !== null) {
                    return $problem;
                }
            }
            return null;
        }
        return 'a ' . get_debug_type($value) . ' is not a JSON value';
    }
}
