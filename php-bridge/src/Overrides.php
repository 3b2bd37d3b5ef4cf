<?php

declare(strict_types=1);

namespace Flagport;

/**
 * A developer's local overrides (docs/spec.md, "Fixed flag values and local overrides"):
 * `FLAGPORT_OVERRIDES` holds inline JSON (starting with `{`) or the path of a JSON file, an
 * object of flag key => value, the same format the Python SDK reads. The keys it names are
 * answered from it, ahead of the server; never in production (`FLAGPORT_ENV=production`, or
 * Laravel's `production` environment), where it is ignored with an error logged.
 *
 * JSON is checked here first by a small scanner, only so that a syntax error can name its line
 * and column (PHP's json_decode() does not say where), and so that a key given twice is refused
 * rather than silently taking the last value.
 */
final class Overrides
{
    public const VARIABLE = 'FLAGPORT_OVERRIDES';
    public const ENVIRONMENT_VARIABLE = 'FLAGPORT_ENV';
    public const MAX_BYTES = 1048576;
    private const MAX_NESTING = 64;

    /** @var array<string, true> messages logged by this process (once each) */
    private static array $logged = [];

    private string $text = '';
    private int $at = 0;
    private int $depth = 0;

    private function __construct()
    {
    }

    /**
     * The overrides `FLAGPORT_OVERRIDES` names, or null: unset or empty, or in production
     * (then an error is logged, once per process). Active overrides are logged once as a
     * warning.
     *
     * @param callable(string): void $logger
     * @param string|null $setting the setting as the app's configuration holds it (Laravel:
     *        `flagport.overrides`, which survives `config:cache`); null: the environment's
     * @throws InvalidOverrides when the setting cannot be read or parsed (naming it and where)
     */
    public static function fromEnvironment(bool $production, callable $logger, ?string $setting = null): ?FixedFlags
    {
        $setting ??= getenv(self::VARIABLE);
        if (!is_string($setting) || trim($setting) === '') {
            return null;
        }
        if ($production || strtolower(trim((string) getenv(self::ENVIRONMENT_VARIABLE))) === 'production') {
            self::once($logger, 'flagport: ' . self::VARIABLE . ' is set in production: the overrides are ignored');
            return null;
        }
        [$flags, $source] = self::read($setting);
        $keys = array_keys($flags->values());
        sort($keys, SORT_STRING);
        $shown = implode(', ', array_slice($keys, 0, 10)) . (count($keys) > 10 ? sprintf(' and %d more', count($keys) - 10) : '');
        self::once($logger, sprintf('flagport: local overrides from %s are active for %d flag(s): %s (never in production)', $source, count($keys), $shown));
        return $flags;
    }

    /**
     * [fixed flags, source] of a `FLAGPORT_OVERRIDES` setting: inline JSON, or a file's path.
     *
     * @return array{0: FixedFlags, 1: string}
     * @throws InvalidOverrides
     */
    public static function read(string $setting): array
    {
        if (str_starts_with(ltrim($setting), '{')) {
            $source = self::VARIABLE . ' (inline JSON)';
            return [self::parse($setting, $source), $source];
        }
        $source = self::VARIABLE . ' file ' . var_export($setting, true);
        $handle = is_file($setting) ? @fopen($setting, 'rb') : false;
        if ($handle === false) {
            throw new InvalidOverrides($source . ': cannot be read: ' . (file_exists($setting) ? 'not a readable file' : 'No such file or directory'));
        }
        try {
            $text = (string) fread($handle, self::MAX_BYTES + 1);
        } finally {
            fclose($handle);
        }
        return [self::parse($text, $source), $source];
    }

    /**
     * Parse and check overrides JSON; errors name `$source` and the position.
     *
     * @throws InvalidOverrides
     */
    public static function parse(string $text, string $source): FixedFlags
    {
        if (strlen($text) > self::MAX_BYTES) {
            throw new InvalidOverrides(sprintf('%s: larger than %d KiB, the limit', $source, self::MAX_BYTES >> 10));
        }
        if (!mb_check_encoding($text, 'UTF-8')) {
            throw new InvalidOverrides($source . ': not UTF-8 text');
        }
        $scanner = new self();
        $scanner->text = $text;
        /** @var array<string, int> $lines top-level key => line */
        $lines = $scanner->document($source);
        $decoded = json_decode($text, false, 512, JSON_BIGINT_AS_STRING);
        if (!$decoded instanceof \stdClass) {
            throw new InvalidOverrides($source . ': line 1: overrides must be a JSON object of flag key to value');
        }
        $values = [];
        foreach (get_object_vars($decoded) as $key => $value) {
            if (is_array($value)) {
                throw new InvalidOverrides(sprintf(
                    '%s, line %d: an array is not a flag value (OFREP allows objects): wrap it in an object',
                    $source,
                    $lines[$key] ?? 1,
                ), (string) $key);
            }
            $values[$key] = self::plain($value);
        }
        try {
            return new FixedFlags($values);
        } catch (InvalidOverrides $error) {
            $key = $error->key;
            $line = $key !== null && isset($lines[$key]) ? ', line ' . $lines[$key] : '';
            throw new InvalidOverrides($source . $line . ': ' . $error->getMessage());
        }
    }

    /** JSON objects as PHP arrays (the bridge's shape of a value), lists kept. */
    private static function plain(mixed $value): mixed
    {
        if ($value instanceof \stdClass) {
            $value = get_object_vars($value);
        }
        if (is_array($value)) {
            foreach ($value as $key => $item) {
                $value[$key] = self::plain($item);
            }
        }
        return $value;
    }

    /** @param callable(string): void $logger */
    private static function once(callable $logger, string $message): void
    {
        if (!isset(self::$logged[$message]) && count(self::$logged) < 100) {
            self::$logged[$message] = true;
            $logger($message);
        }
    }

    // -- the scanner: where a syntax error is -------------------------------------------

    /**
     * Scan the whole text as one JSON value; the lines of the top-level object's keys.
     *
     * @return array<string, int>
     * @throws InvalidOverrides at the first syntax error or repeated key, with its position
     */
    private function document(string $source): array
    {
        $this->space();
        try {
            $lines = $this->value(true);
            $this->space();
            if ($this->at < strlen($this->text)) {
                $this->fail('extra data');
            }
        } catch (\RangeException $error) {
            [$line, $column] = $this->position((int) $error->getCode());
            throw new InvalidOverrides(sprintf('%s: invalid JSON at line %d, column %d: %s', $source, $line, $column, $error->getMessage()));
        }
        return $lines;
    }

    private function fail(string $problem, ?int $at = null): never
    {
        throw new \RangeException($problem, $at ?? $this->at);
    }

    /** @return array{0: int, 1: int} line and column (1-based; the column in characters) */
    private function position(int $at): array
    {
        $before = substr($this->text, 0, $at);
        $newline = strrpos($before, "\n");
        $lineStart = $newline === false ? 0 : $newline + 1;
        return [substr_count($before, "\n") + 1, mb_strlen(substr($before, $lineStart), 'UTF-8') + 1];
    }

    private function space(): void
    {
        $this->at += strspn($this->text, " \t\n\r", $this->at);
    }

    /**
     * @return array<string, int> for the top-level object, its keys' lines
     */
    private function value(bool $top = false): array
    {
        $char = $this->text[$this->at] ?? '';
        if ($char === '{') {
            return $this->object($top);
        }
        if ($char === '[') {
            $this->nest();
            $this->at++;
            $this->space();
            if (($this->text[$this->at] ?? '') === ']') {
                $this->at++;
                $this->depth--;
                return [];
            }
            while (true) {
                $this->space();
                $this->value();
                $this->space();
                $char = $this->text[$this->at] ?? '';
                $this->at++;
                if ($char === ']') {
                    $this->depth--;
                    return [];
                }
                if ($char !== ',') {
                    $this->fail("expecting ',' delimiter", $this->at - 1);
                }
            }
        }
        if ($char === '"') {
            $this->string();
            return [];
        }
        foreach (['true', 'false', 'null'] as $literal) {
            if (substr_compare($this->text, $literal, $this->at, strlen($literal)) === 0) {
                $this->at += strlen($literal);
                return [];
            }
        }
        if (preg_match('/-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?/A', $this->text, $match, 0, $this->at) === 1) {
            $this->at += strlen($match[0]);
            return [];
        }
        $this->fail('expecting value');
    }

    /** @return array<string, int> keys => lines (filled for the top level only) */
    private function object(bool $top): array
    {
        $this->nest();
        $this->at++;
        $seen = [];
        $lines = [];
        $this->space();
        if (($this->text[$this->at] ?? '') === '}') {
            $this->at++;
            $this->depth--;
            return [];
        }
        while (true) {
            $this->space();
            if (($this->text[$this->at] ?? '') !== '"') {
                $this->fail('expecting property name enclosed in double quotes');
            }
            $start = $this->at;
            $key = $this->string();
            if (isset($seen[$key])) {
                $this->fail('duplicate key ' . var_export($key, true), $start);
            }
            $seen[$key] = true;
            if ($top) {
                $lines[$key] = $this->position($start)[0];
            }
            $this->space();
            if (($this->text[$this->at] ?? '') !== ':') {
                $this->fail("expecting ':' delimiter");
            }
            $this->at++;
            $this->space();
            $this->value();
            $this->space();
            $char = $this->text[$this->at] ?? '';
            $this->at++;
            if ($char === '}') {
                $this->depth--;
                return $lines;
            }
            if ($char !== ',') {
                $this->fail("expecting ',' delimiter", $this->at - 1);
            }
        }
    }

    /** Where and why the string starting at `$start` is not JSON (as Python's json says). */
    private function stringError(int $start): never
    {
        $length = strlen($this->text);
        for ($i = $start + 1; $i < $length; $i++) {
            $char = $this->text[$i];
            if (ord($char) < 0x20) {
                $this->fail('invalid control character', $i);
            }
            if ($char === '\\') {
                if (preg_match('/\\\\(?:["\\\\\/bfnrt]|u[0-9a-fA-F]{4})/A', $this->text, $match, 0, $i) !== 1) {
                    $this->fail('invalid \\escape', $i);
                }
                $i++;
            }
        }
        $this->fail('unterminated string starting here', $start);
    }

    private function nest(): void
    {
        if (++$this->depth > self::MAX_NESTING) {
            $this->fail('nested too deeply');
        }
    }

    /** The string starting at the current quote, decoded; the position moves past it. */
    private function string(): string
    {
        $start = $this->at;
        if (preg_match('/"(?:[^"\\\\\x00-\x1f]|\\\\(?:["\\\\\/bfnrt]|u[0-9a-fA-F]{4}))*+"/A', $this->text, $match, 0, $start) !== 1) {
            $this->stringError($start);
        }
        $this->at += strlen($match[0]);
        $decoded = json_decode($match[0]);
        return is_string($decoded) ? $decoded : '';
    }
}
