<?php

declare(strict_types=1);

namespace Flagport;

/**
 * The admin API, for the artisan commands that mirror `flags enable`, `flags disable` and
 * `flags stats`.
 * Unlike {@see Client}, it reports failures: an operator must know a change did not happen.
 */
final class AdminClient
{
    /** Whole-call timeout of an admin call, milliseconds, when none is given. */
    public const DEFAULT_TIMEOUT_MS = 5000;

    private Transport $transport;

    /**
     * @param string      $url       server URL or `unix:///path.sock`
     * @param string|null $token     admin token (FLAGPORT_ADMIN_TOKEN)
     * @param int         $timeoutMs whole-call timeout in milliseconds
     */
    public function __construct(private string $url, private ?string $token, int $timeoutMs = self::DEFAULT_TIMEOUT_MS, ?Transport $transport = null)
    {
        $this->transport = $transport ?? new CurlTransport($url, min(1000, $timeoutMs), $timeoutMs, $token);
    }

    /**
     * Enable a flag, optionally at a percentage.
     *
     * @return array<string, mixed> the server's answer: `{"flag": {...}, "snapshot_version": N}`
     * @throws AdminException
     */
    public function enable(string $key, float|int|null $percentage = null, ?string $reason = null): array
    {
        $body = [];
        if ($percentage !== null) {
            $body['percentage'] = $percentage;
        }
        if ($reason !== null) {
            $body['reason'] = $reason;
        }
        return $this->post('/admin/v1/flags/' . rawurlencode($key) . '/enable', $body);
    }

    /**
     * Disable a flag (the kill switch).
     *
     * @return array<string, mixed>
     * @throws AdminException
     */
    public function disable(string $key, ?string $reason = null): array
    {
        return $this->post('/admin/v1/flags/' . rawurlencode($key) . '/disable', $reason === null ? [] : ['reason' => $reason]);
    }

    /**
     * Wait until every live worker of every instance has applied snapshot `$version` (an
     * answer's `snapshot_version`), as `flags enable/disable` do: the change is then what
     * every worker serves. Polls `GET /admin/v1/propagation`; a poll the server does not
     * answer can hold the wait one admin call's timeout past `$timeoutS`, and ends it as not
     * confirmed when that is past (the change is committed, its confirmation is missing).
     *
     * @return array<string, mixed> the registry's answer: `complete`, `workers`, `stragglers`
     * @throws AdminException NOT_CONFIRMED, naming the stragglers, after `$timeoutS` seconds
     */
    public function waitForVersion(int $version, float $timeoutS = 5.0): array
    {
        $deadline = microtime(true) + $timeoutS;
        $delay = 0.005;
        while (true) {
            try {
                $body = $this->call('GET', '/admin/v1/propagation?version=' . $version, null);
            } catch (AdminException $silent) {
                if ($silent->exitCode() !== AdminException::UNREACHABLE || microtime(true) < $deadline) {
                    throw $silent;
                }
                throw new AdminException(sprintf(
                    'snapshot version %d is committed but not confirmed within %s s: %s',
                    $version,
                    self::seconds($timeoutS),
                    $silent->getMessage(),
                ), AdminException::NOT_CONFIRMED);
            }
            if (($body['complete'] ?? false) === true) {
                return $body;
            }
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                $stragglers = [];
                foreach ((array) ($body['stragglers'] ?? []) as $worker) {
                    $stragglers[] = sprintf(
                        '%s pid %s (at %s)',
                        self::printable($worker['instance'] ?? '?'),
                        self::printable($worker['pid'] ?? '?'),
                        self::printable($worker['applied_version'] ?? '?'),
                    );
                }
                throw new AdminException(sprintf(
                    'snapshot version %d is committed but not confirmed within %s s by: %s',
                    $version,
                    self::seconds($timeoutS),
                    $stragglers === [] ? 'unknown workers' : implode(', ', $stragglers),
                ), AdminException::NOT_CONFIRMED);
            }
            usleep((int) (min($delay, $left) * 1e6));
            $delay = min($delay * 1.5, 0.01);
        }
    }

    /** Seconds as `flags` prints them: 0.5, 5, 1.25. */
    private static function seconds(float $seconds): string
    {
        return rtrim(rtrim(number_format($seconds, 3, '.', ''), '0'), '.');
    }

    /** A value from an answer as one line of text (control characters escaped). */
    private static function printable(mixed $value): string
    {
        $text = is_scalar($value) ? (string) $value : (string) json_encode($value);
        return addcslashes(substr($text, 0, 200), "\0..\37\177");
    }

    /**
     * A flag's adoption: evaluations and unique units per variant, `enabled` (units served
     * on), `adoption`, the per-minute series and the changes in the window (`flags stats`).
     *
     * @param string $since a duration (`1h`, `24h`, `7d`) or an ISO-8601 date-time
     * @return array<string, mixed>
     * @throws AdminException
     */
    public function stats(string $key, ?string $since = null): array
    {
        // No since: the server's default window (the last 24 hours).
        $query = $since === null ? '' : '?since=' . rawurlencode($since);
        return $this->call('GET', '/admin/v1/flags/' . rawurlencode($key) . '/stats' . $query, null);
    }

    /**
     * @param array<string, mixed> $body
     * @return array<string, mixed>
     * @throws AdminException
     */
    private function post(string $path, array $body): array
    {
        return $this->call('POST', $path, (string) json_encode((object) $body, JSON_PRESERVE_ZERO_FRACTION | JSON_UNESCAPED_SLASHES));
    }

    /**
     * @return array<string, mixed>
     * @throws AdminException
     */
    private function call(string $method, string $path, ?string $json): array
    {
        if ($this->token === null || $this->token === '') {
            throw new AdminException('no admin token: set FLAGPORT_ADMIN_TOKEN (config flagport.admin_token)', AdminException::UNAUTHORIZED);
        }
        try {
            $response = $this->transport->request($method, $path, $json);
        } catch (TransportException $error) {
            throw new AdminException("cannot reach Flagport at {$this->url}: {$error->getMessage()}", AdminException::UNREACHABLE);
        }
        $data = json_decode($response->body, true);
        if ($response->status >= 200 && $response->status < 300 && is_array($data)) {
            return $data;
        }
        $detail = is_array($data) ? (string) ($data['detail'] ?? $data['title'] ?? $response->body) : $response->body;
        $code = in_array($response->status, [401, 403], true) ? AdminException::UNAUTHORIZED
            : ($response->status >= 500 ? AdminException::UNREACHABLE : AdminException::REFUSED);
        throw new AdminException("Flagport refused ({$response->status}): " . substr($detail, 0, 300), $code, $response->status);
    }
}
