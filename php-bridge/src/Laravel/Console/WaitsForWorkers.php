<?php

declare(strict_types=1);

namespace Flagport\Laravel\Console;

use Flagport\AdminClient;
use Flagport\AdminException;

/**
 * The end of the artisan commands that change what is served, as of `flags enable/disable`:
 * wait until every live worker has applied the change (`--timeout`, default 5 s; exit 5
 * naming the stragglers), unless `--no-wait`. When `feature:disable` exits 0, the kill switch
 * is live everywhere. The options it reads are declared by WaitOptions::SIGNATURE (a trait
 * holds no constant before PHP 8.2, and the bridge supports 8.1).
 */
trait WaitsForWorkers
{
    /** The --timeout given, checked before any request; null (said why) when it is bad. */
    private function waitTimeout(): ?float
    {
        $timeout = $this->option('timeout');
        if (!is_numeric($timeout) || (float) $timeout < 0 || (float) $timeout > 3600) {
            $this->error("--timeout must be a number of seconds from 0 to 3600, got '$timeout'");
            return null;
        }
        return (float) $timeout;
    }

    /**
     * @param array<string, mixed> $answer the change's answer (its `snapshot_version`)
     * @return int the exit code: 0, or the wait's failure (5: not confirmed in time)
     */
    private function waitForWorkers(AdminClient $admin, array $answer, float $timeout): int
    {
        $version = $answer['snapshot_version'] ?? null;
        if ($this->option('no-wait') || !is_int($version)) {
            return 0; // an older server does not say which version carries the change
        }
        try {
            $registry = $admin->waitForVersion($version, $timeout);
        } catch (AdminException $error) {
            $this->error($error->getMessage());
            return $error->exitCode();
        }
        $workers = (array) ($registry['workers'] ?? []);
        $instances = array_unique(array_map(static fn ($w): string => (string) ($w['instance'] ?? ''), $workers));
        $this->info(sprintf(
            'snapshot version %d applied by %d worker(s) on %d instance(s)',
            $version,
            count($workers),
            count($instances),
        ));
        return 0;
    }
}
