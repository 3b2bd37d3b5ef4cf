<?php

declare(strict_types=1);

namespace Flagport;

/**
 * `window.features` for the browser: flag values nested by their dotted keys.
 *
 * `ui-improvements` = false and `ui-improvements.dropdown-fixes` = true become
 * `{"ui-improvements": {"_value": false, "dropdown-fixes": true}}`, so JavaScript reads
 * `window.features?.['ui-improvements']?.['dropdown-fixes']` and
 * `window.features?.['ui-improvements']?._value`. A key without children stays a plain value.
 */
final class FeaturesScript
{
    /** Escapes `<`, `>`, `&`, `'` and `"` as \u00XX, so no value can close the script element. */
    public const JSON_FLAGS = JSON_HEX_TAG | JSON_HEX_AMP | JSON_HEX_APOS | JSON_HEX_QUOT
        | JSON_PRESERVE_ZERO_FRACTION | JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE;

    /**
     * Nest flat `key => value` pairs by their dotted keys. Nodes are objects; flag values are
     * left exactly as they are (so a flag whose value is a JSON object stays a value).
     *
     * @param array<string, mixed> $values
     */
    public static function nest(array $values): \stdClass
    {
        // Sorted, a parent ("a") always comes before its children ("a.b").
        ksort($values, SORT_STRING);
        $root = new \stdClass();
        foreach ($values as $key => $value) {
            $node = $root;
            $parts = explode('.', (string) $key);
            $last = (string) array_pop($parts);
            foreach ($parts as $part) {
                if (!isset($node->{$part}) || !$node->{$part} instanceof \stdClass) {
                    $child = new \stdClass();
                    if (property_exists($node, $part)) {
                        $child->_value = $node->{$part};
                    }
                    $node->{$part} = $child;
                }
                $node = $node->{$part};
            }
            if (isset($node->{$last}) && $node->{$last} instanceof \stdClass) {
                $node->{$last}->_value = $value;
            } else {
                $node->{$last} = $value;
            }
        }
        return $root;
    }

    /**
     * The `<script>` element setting `window.features`.
     *
     * @param array<string, mixed> $values flat key => value
     * @param string|null $nonce a CSP nonce for the element
     */
    public static function render(array $values, ?string $nonce = null): string
    {
        $attributes = $nonce !== null ? ' nonce="' . htmlspecialchars($nonce, ENT_QUOTES) . '"' : '';
        return '<script' . $attributes . '>window.features = ' . self::json($values) . ';</script>';
    }

    /**
     * The nested object as JSON that is safe inside a script element.
     *
     * @param array<string, mixed> $values flat key => value
     */
    public static function json(array $values): string
    {
        $json = json_encode(self::nest($values), self::JSON_FLAGS);
        return $json === false ? '{}' : $json;
    }

    /**
     * Keep only the keys selected by `only` (null: all) and not by `except`; an entry selects
     * a key and its descendants (`ui-improvements` selects `ui-improvements.dropdown-fixes`).
     *
     * @param array<string, mixed> $values
     * @param list<string>|null $only
     * @param list<string> $except
     * @return array<string, mixed>
     */
    public static function select(array $values, ?array $only, array $except = []): array
    {
        $matches = static function (string $key, array $prefixes): bool {
            foreach ($prefixes as $prefix) {
                if ($key === $prefix || str_starts_with($key, $prefix . '.')) {
                    return true;
                }
            }
            return false;
        };
        $kept = [];
        foreach ($values as $key => $value) {
            $key = (string) $key;
            if (($only === null || $matches($key, $only)) && !$matches($key, $except)) {
                $kept[$key] = $value;
            }
        }
        return $kept;
    }
}
