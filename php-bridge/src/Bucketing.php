<?php

declare(strict_types=1);

namespace Flagport;

/**
 * Bucketing spec v1 (docs/spec.md section 1), identical to the Python engine's `flagport.bucket`.
 *
 *     h(seed)  = MurmurHash3_x86_32(utf8(salt . ":" . unit), seed), unsigned 32-bit
 *     bucket   = (h(0) * 100000) >> 32            in [0, 100000)
 *     included = bucket < round(percentage * 1000)
 *
 * PHP integers are 64-bit, so `h * 100000` (< 2^49) and `h(1) * totalWeight` (< 2^63 for
 * weights totalling at most 2^31 - 1) are exact. Checked against tests/spec/bucketing-vectors.json.
 */
final class Bucketing
{
    /** Number of buckets: 0.001 % resolution. */
    public const BUCKETS = 100000;

    /** The spec version this class implements (the snapshot's `"bucketing"` field). */
    public const VERSION = 1;

    /**
     * MurmurHash3_x86_32 of `salt:unit` as an unsigned 32-bit integer.
     *
     * @param string     $salt the flag's salt (its own full key unless set)
     * @param string|int $unit the bucketing unit; an integer hashes as its decimal string
     * @param int        $seed 0 for inclusion, 1 for the variant walk
     */
    public static function hash(string $salt, string|int $unit, int $seed = 0): int
    {
        /** @var array{1: int} $word */
        $word = unpack('N', hash('murmur3a', $salt . ':' . $unit, true, ['seed' => $seed]));
        return $word[1];
    }

    /**
     * The unit's bucket in [0, 100000) for this salt and seed.
     *
     * @param string     $salt the flag's salt (its own full key unless set)
     * @param string|int $unit the bucketing unit; an integer buckets as its decimal string
     * @param int        $seed 0 for inclusion, 1 for the variant walk
     */
    public static function bucket(string $salt, string|int $unit, int $seed = 0): int
    {
        return (self::hash($salt, $unit, $seed) * self::BUCKETS) >> 32;
    }

    /**
     * Whether the unit falls inside a rollout at `$percentage` % (0..100, at most 3 decimals).
     */
    public static function included(string $salt, string|int $unit, float|int $percentage): bool
    {
        if ($percentage >= 100) {
            return true;
        }
        if ($percentage <= 0) {
            return false;
        }
        return self::bucket($salt, $unit) < (int) round($percentage * 1000);
    }

    /**
     * The variant a unit gets from integer weights (walked in the given order).
     *
     * @param array<string, int> $weights variant name => non-negative integer weight
     * @return string|null null when the weights total 0
     */
    public static function variant(string $salt, string|int $unit, array $weights): ?string
    {
        $total = array_sum($weights);
        if ($total <= 0) {
            return null;
        }
        $point = (self::hash($salt, $unit, 1) * $total) >> 32;
        $cumulative = 0;
        foreach ($weights as $name => $weight) {
            $cumulative += $weight;
            if ($point < $cumulative) {
                return (string) $name;
            }
        }
        return null;
    }
}
