<?php

/**
 * The bridge's answers to the shared evaluation cases (tests/php/test_shared_cases_live.py).
 *
 * Reads `{"url": ..., "cases": [{"key": ..., "context": {...}}, ...]}` on stdin and writes one
 * JSON answer per case: the context as sent, `isEnabled` with both defaults, `value`,
 * `details` and where the answers came from. The harness compares them with the engine's.
 */

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

const JSON_OUT = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR;

$input = json_decode((string) stream_get_contents(STDIN), true, 64, JSON_THROW_ON_ERROR);
$logged = [];
$client = new Flagport\Client(
    ['url' => (string) $input['url'], 'timeout_ms' => 5000, 'connect_timeout_ms' => 2000, 'cache_prefix' => 'cases'],
    null,
    new Flagport\Store\MemoryStore(),
    null,
    static function (string $message) use (&$logged): void {
        $logged[] = $message;
    },
);
$answers = [];
foreach ($input['cases'] as $case) {
    $key = (string) $case['key'];
    $context = (array) $case['context'];
    $answers[] = [
        'sent' => (object) $client->normalizeContext($context),
        'enabled' => $client->isEnabled($key, $context),
        'enabledOrTrue' => $client->isEnabled($key, $context, true),
        'value' => $client->value($key, null, $context),
        'details' => $client->details($key, $context),
        'source' => $client->status()['source'],
    ];
}
echo json_encode(['answers' => $answers, 'logged' => $logged], JSON_OUT);
