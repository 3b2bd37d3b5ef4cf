<?php

declare(strict_types=1);

namespace Flagport\Laravel\Console;

use Flagport\AdminClient;
use Flagport\AdminException;
use Illuminate\Console\Command;

/** `php artisan feature:disable ui-improvements` (mirrors `flags disable`: the kill switch). */
final class FeatureDisableCommand extends Command
{
    use WaitsForWorkers;

    /** @var string */
    protected $signature = 'feature:disable {key : The flag key, e.g. ui-improvements}
        {--reason= : Why, recorded in the audit log}' . WaitOptions::SIGNATURE;

    /** @var string */
    protected $description = 'Disable a Flagport feature flag (its children follow it)';

    public function handle(AdminClient $admin): int
    {
        $key = (string) $this->argument('key');
        $timeout = $this->waitTimeout();
        if ($timeout === null) {
            return 2;
        }
        try {
            $answer = $admin->disable($key, $this->option('reason') ?: null);
        } catch (AdminException $error) {
            $this->error($error->getMessage());
            return $error->exitCode();
        }
        $this->info(sprintf(
            '%s disabled (version %s, snapshot %s)',
            $key,
            $answer['flag']['version'] ?? '?',
            $answer['snapshot_version'] ?? '?',
        ));
        return $this->waitForWorkers($admin, $answer, $timeout);
    }
}
