<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\AdminClient;
use Flagport\AdminException;
use Flagport\HttpResponse;
use Flagport\TransportException;
use PHPUnit\Framework\TestCase;

/**
 * The admin client's wait on the propagation registry (what `feature:enable` and
 * `feature:disable` wait on): polled until complete, else exit 5 naming the stragglers.
 */
final class AdminClientTest extends TestCase
{
    /** @param array<string, mixed> $body */
    private static function registry(array $body): HttpResponse
    {
        return new HttpResponse(200, (string) json_encode($body), null);
    }

    public function testItPollsUntilEveryWorkerAppliedTheVersion(): void
    {
        $behind = ['instance' => 'web-1', 'pid' => 41, 'applied_version' => 6];
        $done = ['instance' => 'web-1', 'pid' => 41, 'applied_version' => 7];
        $transport = new FakeTransport([
            self::registry(['complete' => false, 'workers' => [], 'stragglers' => [$behind]]),
            self::registry(['complete' => true, 'workers' => [$done], 'stragglers' => []]),
        ]);
        $admin = new AdminClient('http://flagport.test', 'fpa_x', 1000, $transport);
        $registry = $admin->waitForVersion(7, 5.0);
        self::assertSame([$done], $registry['workers']);
        self::assertCount(2, $transport->requests);
        self::assertSame('/admin/v1/propagation?version=7', $transport->requests[0]['path']);
        self::assertSame('GET', $transport->requests[0]['method']);
    }

    public function testNotConfirmedInTimeExitsFiveNamingTheStragglers(): void
    {
        $forged = ['instance' => "web-2\n[ok] all applied", 'pid' => 42, 'applied_version' => 6];
        $answers = array_fill(0, 200, self::registry(['complete' => false, 'stragglers' => [$forged]]));
        $admin = new AdminClient('http://flagport.test', 'fpa_x', 1000, new FakeTransport($answers));
        $started = microtime(true);
        try {
            $admin->waitForVersion(7, 0.05);
            self::fail('not confirmed, yet no exception');
        } catch (AdminException $error) {
            self::assertSame(AdminException::NOT_CONFIRMED, $error->exitCode());
            self::assertSame(
                'snapshot version 7 is committed but not confirmed within 0.05 s by: '
                . 'web-2\n[ok] all applied pid 42 (at 6)',
                $error->getMessage(),
            );
        }
        self::assertLessThan(2.0, microtime(true) - $started);
    }

    public function testAPollUnansweredAtTheDeadlineIsNotConfirmedAndEarlierUnreachable(): void
    {
        // The poll that fails ends at (or after) a deadline of 0 s: the change is committed,
        // only its confirmation is missing (exit 5, as `flags` says).
        $late = new AdminClient('http://flagport.test', 'fpa_x', 1000, new FakeTransport([
            new TransportException('operation timed out'),
        ]));
        try {
            $late->waitForVersion(7, 0.0);
            self::fail('not confirmed, yet no exception');
        } catch (AdminException $error) {
            self::assertSame(AdminException::NOT_CONFIRMED, $error->exitCode());
            self::assertStringStartsWith('snapshot version 7 is committed but not confirmed within 0 s: cannot reach', $error->getMessage());
        }
        // A server gone well before the deadline is unreachable (exit 3).
        $gone = new AdminClient('http://flagport.test', 'fpa_x', 1000, new FakeTransport([
            new TransportException('connection refused'),
        ]));
        try {
            $gone->waitForVersion(7, 30.0);
            self::fail('unreachable, yet no exception');
        } catch (AdminException $error) {
            self::assertSame(AdminException::UNREACHABLE, $error->exitCode());
        }
    }

    public function testARefusalOfTheRegistryIsTheAdminCallsError(): void
    {
        $admin = new AdminClient('http://flagport.test', 'fpv_x', 1000, new FakeTransport([
            new HttpResponse(403, '{"detail":"needs viewer"}', null),
        ]));
        $this->expectException(AdminException::class);
        $this->expectExceptionMessage('Flagport refused (403)');
        $admin->waitForVersion(7, 1.0);
    }
}
