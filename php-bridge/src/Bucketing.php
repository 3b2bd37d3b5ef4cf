<?php

declare(strict_types=1);

namespace Flagport;

/**
 * Bucketing spec v1 (DESIGN.md section 2), identical to the Python engine:
 * hash = MurmurHash3_x86_32(utf8(salt . ':' . unit), seed) unsigned;
 * bucket = (hash * 100000) >> 32, an integer in [0, 100000).
 *
 * PHP integers are int64: hash < 2^32, so hash * 100000 < 2^49 stays exact.
 */
final class Bucketing
{
    public const BUCKETS = 100000;

    public static function hash(string $salt, string|int $unit, int $seed = 0): int
    {
        return self::raw($salt . ':' . $unit, $seed);
    }

    /** MurmurHash3_x86_32 of the bytes of $input, unsigned. */
    public static function raw(string $input, int $seed = 0): int
    {
        return (int) hexdec(hash('murmur3a', $input, false, ['seed' => $seed]));
    }

    public static function bucket(string $salt, string|int $unit, int $seed = 0): int
    {
        return (self::hash($salt, $unit, $seed) * self::BUCKETS) >> 32;
    }
}
