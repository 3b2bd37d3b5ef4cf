<?php

declare(strict_types=1);

namespace Flagport\Laravel\Console;

use Flagport\AdminClient;
use Flagport\AdminException;
use Illuminate\Console\Command;

/** `php artisan feature:stats ui-improvements --since=24h` (mirrors `flags stats`). */
final class FeatureStatsCommand extends Command
{
    /** @var string */
    protected $signature = 'feature:stats {key : The flag key, e.g. ui-improvements}
        {--since= : Window start: 1h, 24h, 7d or an ISO-8601 date-time (at most 7 days back; default: the server\'s, the last 24 hours)}';

    /** @var string */
    protected $description = 'Adoption of a Flagport feature flag: evaluations, unique users, changes';

    public function handle(AdminClient $admin): int
    {
        $key = (string) $this->argument('key');
        $since = $this->option('since') ?: null;
        // The form only, for exit code 2 before any request (as `flags stats`); the server reads
        // the value (flagport.durations in the Python tree) and refuses what it cannot serve.
        if ($since !== null && preg_match('/^(\d+[smhdw])+$/', (string) $since) !== 1 && !self::isIsoDate((string) $since)) {
            $this->error("invalid --since '$since': use a duration (1h, 24h, 7d) or an ISO-8601 date-time");
            return 2;
        }
        try {
            $stats = $admin->stats($key, $since === null ? null : (string) $since);
        } catch (AdminException $error) {
            $this->error($error->getMessage());
            return $error->exitCode();
        }
        $state = $stats['state'] ?? [];
        $adoption = $stats['adoption'] ?? null;
        $this->info(sprintf(
            '%s: %s at %s %%',
            $key,
            ($state['enabled'] ?? false) ? 'on' : 'off (kill switch)',
            self::number((float) ($stats['percentage'] ?? 0)),
        ));
        $this->line(sprintf('window      %s -> %s', $stats['since'] ?? '?', $stats['until'] ?? '?'));
        $this->line(sprintf(
            'enabled     %s units served on, of %s seen (adoption %s)',
            number_format((int) ($stats['enabled'] ?? 0)),
            number_format((int) ($stats['units_seen'] ?? 0)),
            is_numeric($adoption) ? self::number((float) $adoption * 100, 1) . ' %' : '-',
        ));
        $this->line(sprintf('evaluations %s', number_format((int) ($stats['total_evaluations'] ?? 0))));
        $unique = $stats['unique_units'] ?? [];
        $rows = [];
        foreach (($stats['evaluations'] ?? []) as $variant => $count) {
            $rows[] = [(string) $variant, number_format((int) $count), number_format((int) ($unique[$variant] ?? 0))];
        }
        if ($rows !== []) {
            $this->table(['Variant', 'Evaluations', 'Unique units'], $rows);
        }
        foreach (($stats['changes'] ?? []) as $change) {
            $at = (string) ($change['at'] ?? '');
            $this->line(sprintf('change      %s at %s by %s', $change['summary'] ?? '?', substr($at, 11, 5) . ' on ' . substr($at, 0, 10), $change['actor'] ?? '?'));
        }
        return 0;
    }

    private static function isIsoDate(string $text): bool
    {
        return preg_match('/^\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?$/', $text) === 1;
    }

    private static function number(float $value, int $decimals = 3): string
    {
        return rtrim(rtrim(number_format($value, $decimals, '.', ''), '0'), '.');
    }
}
