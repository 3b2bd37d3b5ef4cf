<?php

declare(strict_types=1);

namespace Flagport\Laravel\Console;

use Flagport\AdminClient;
use Flagport\AdminException;
use Illuminate\Console\Command;

/** `php artisan feature:enable ui-improvements --percentage=10` (mirrors `flags enable`). */
final class FeatureEnableCommand extends Command
{
    use WaitsForWorkers;

    /** @var string */
    protected $signature = 'feature:enable {key : The flag key, e.g. ui-improvements}
        {--percentage= : Roll out to this percentage of users (0-100, up to 3 decimals)}
        {--reason= : Why, recorded in the audit log}' . WaitOptions::SIGNATURE;

    /** @var string */
    protected $description = 'Enable a Flagport feature flag, optionally at a percentage';

    public function handle(AdminClient $admin): int
    {
        $key = (string) $this->argument('key');
        $raw = $this->option('percentage');
        $percentage = null;
        if ($raw !== null && $raw !== '') {
            if (!is_numeric($raw) || (float) $raw < 0 || (float) $raw > 100) {
                $this->error("--percentage must be a number from 0 to 100, got '$raw'");
                return 2;
            }
            $percentage = str_contains((string) $raw, '.') ? (float) $raw : (int) $raw;
        }
        $timeout = $this->waitTimeout();
        if ($timeout === null) {
            return 2;
        }
        try {
            $answer = $admin->enable($key, $percentage, $this->option('reason') ?: null);
        } catch (AdminException $error) {
            $this->error($error->getMessage());
            return $error->exitCode();
        }
        $flag = $answer['flag'] ?? [];
        $stored = $flag['percentage'] ?? $percentage;
        $this->info(sprintf(
            '%s enabled at %s %% (version %s, snapshot %s)',
            $key,
            rtrim(rtrim(number_format((float) $stored, 3, '.', ''), '0'), '.'),
            $flag['version'] ?? '?',
            $answer['snapshot_version'] ?? '?',
        ));
        if ((float) $stored === 0.0) {
            $this->warn("$key is enabled at 0 %: nobody gets it until you raise --percentage");
        }
        return $this->waitForWorkers($admin, $answer, $timeout);
    }
}
