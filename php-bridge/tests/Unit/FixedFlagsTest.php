<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\Client;
use Flagport\FixedFlags;
use Flagport\InvalidOverrides;
use Flagport\Overrides;
use Flagport\Store\MemoryStore;
use PHPUnit\Framework\TestCase;

/**
 * Fixed flag values and a developer's local overrides, checked with the same files as the
 * Python SDK (tests/spec/overrides/): the answers they make, the errors of bad files (file,
 * line, column), FLAGPORT_OVERRIDES over a server's answers, and production ignoring it.
 */
final class FixedFlagsTest extends TestCase
{
    private const SPEC = __DIR__ . '/../../../tests/spec/overrides/';

    protected function tearDown(): void
    {
        \Flagport\Flagport::setClient(null);
        putenv(Overrides::VARIABLE);
        putenv(Overrides::ENVIRONMENT_VARIABLE);
        MemoryStore::flush();
    }

    /** @return array<string, mixed> */
    private static function json(string $file): array
    {
        return json_decode((string) file_get_contents(self::SPEC . $file), true, 64, JSON_THROW_ON_ERROR);
    }

    public function testTheSharedFileAnswersAsTheSpecSays(): void
    {
        [$flags, $source] = Overrides::read(self::SPEC . 'overrides.json');
        self::assertStringContainsString('overrides.json', $source);
        $client = (new Client(['local_overrides' => false], null, new MemoryStore()))->fake($flags->values());
        foreach (self::json('expected.json') as $key => $answer) {
            $item = $flags->items()[$key];
            self::assertEquals($answer['metadata'], $item['metadata'] ?? null, $key);
            self::assertSame($answer['value'], $item['value'], $key);
            self::assertSame($answer['variant'], $item['variant'], $key);
            self::assertSame($answer['reason'], $item['reason'], $key);
            $details = $client->details($key);
            self::assertSame($answer['value'], $details['value'], $key);
            self::assertSame($answer['variant'], $details['variant'], $key);
            self::assertSame(Client::SOURCE_FAKE, $details['source']);
            // On unless it serves its off variant: what feature() says.
            self::assertSame($answer['variant'] === 'on', $client->isEnabled($key, null, !($answer['variant'] === 'on')), $key);
        }
        self::assertSame(0, $client->status()['calls']);
    }

    public function testBadFilesNameTheFileAndThePosition(): void
    {
        $cases = self::json('bad-cases.json')['cases'];
        self::assertGreaterThanOrEqual(10, count($cases));
        foreach ($cases as $case) {
            $path = self::SPEC . 'bad/' . $case['file'];
            try {
                Overrides::read($path);
                self::fail("{$case['file']} was accepted");
            } catch (InvalidOverrides $error) {
                $message = $error->getMessage();
                self::assertStringContainsString($path, $message);
                self::assertMatchesRegularExpression("/\\bline {$case['line']}\\b/", $message, $case['file']);
                if ($case['column'] !== null) {
                    self::assertMatchesRegularExpression("/\\bcolumn {$case['column']}\\b/", $message, $case['file']);
                }
                foreach ($case['words'] as $word) {
                    self::assertStringContainsStringIgnoringCase($word, $message, $case['file']);
                }
            }
        }
    }

    public function testBadValuesForAFakeAreRefusedNamingTheEntry(): void
    {
        foreach ([['Checkout' => true], ['x' => null], ['x' => [1, 2]], ['x' => INF]] as $values) {
            try {
                new FixedFlags($values);
                self::fail('accepted ' . var_export($values, true));
            } catch (InvalidOverrides $error) {
                self::assertSame((string) array_key_first($values), $error->key);
            }
        }
        self::assertSame(['x' => ['a' => 1]], (new FixedFlags(['x' => ['a' => 1]]))->values());
        try {
            Overrides::parse(str_repeat('[', 100) . str_repeat(']', 100), 'deep');
            self::fail('a deep document was accepted');
        } catch (InvalidOverrides $error) {
            self::assertStringContainsString('nested too deeply', $error->getMessage());
        }
    }

    public function testLocalOverridesAnswerTheirKeysAheadOfTheServer(): void
    {
        $transport = new FakeTransport([new \Flagport\HttpResponse(200, json_encode(['flags' => [
            ['key' => 'ui-improvements', 'value' => false, 'variant' => 'off', 'reason' => 'DISABLED'],
            ['key' => 'auth-improvements', 'value' => true, 'variant' => 'on', 'reason' => 'STATIC'],
        ]]), null)]);
        putenv(Overrides::VARIABLE . '=' . self::SPEC . 'overrides.json');
        $logged = [];
        $client = new Client([], null, new MemoryStore(), $transport, static function (string $message) use (&$logged): void {
            $logged[] = $message;
        });
        self::assertTrue($client->isEnabled('ui-improvements'), 'overridden');
        self::assertFalse($client->isEnabled('auth-improvements', null, true), 'overridden off');
        self::assertSame('variant-b', $client->value('checkout'));
        self::assertSame(1, $client->status()['calls'], 'the server still answers the other flags');
        self::assertFalse($client->isFaked());
        self::assertCount(1, $logged);
        self::assertStringContainsString('local overrides from FLAGPORT_OVERRIDES file', $logged[0]);
        self::assertStringContainsString('8 flag(s)', $logged[0]);

        putenv(Overrides::VARIABLE . '={"ui-improvements": false}');
        $client = new Client([], null, new MemoryStore(), new FakeTransport([]), static function (): void {
        });
        self::assertFalse($client->isEnabled('ui-improvements', null, true));
    }

    public function testProductionIgnoresTheOverridesAndSaysSo(): void
    {
        putenv(Overrides::VARIABLE . '={"ui-improvements": true, "the-production-check": true}');
        $logged = [];
        $logger = static function (string $message) use (&$logged): void {
            $logged[] = $message;
        };
        foreach ([['production' => true], []] as $options) {
            if ($options === []) {
                putenv(Overrides::ENVIRONMENT_VARIABLE . '=production');
            }
            $client = new Client($options, null, new MemoryStore(), new FakeTransport([]), $logger);
            self::assertFalse($client->isEnabled('ui-improvements'));
        }
        // Once per process, however many clients are made.
        self::assertSame(['flagport: FLAGPORT_OVERRIDES is set in production: the overrides are ignored'], array_values(array_filter($logged, static fn (string $m): bool => str_contains($m, 'production'))));
    }

    public function testFakeOutsideLaravelServesTheHelpersWithoutAServer(): void
    {
        // The developer's overrides are not the test's: a fake of its own does not read them.
        putenv(Overrides::VARIABLE . '={"checkout": "from-the-developer"}');
        $client = \Flagport\Flagport::fake(['ui-improvements' => true, 'checkout' => 'variant-b']);
        putenv(Overrides::VARIABLE);
        self::assertTrue(feature('ui-improvements'));
        self::assertSame('variant-b', feature_value('checkout'));
        self::assertFalse(feature('ui-improvements.dropdown-fixes'));
        \Flagport\Flagport::override('ui-improvements', false);
        self::assertFalse(feature('ui-improvements'));
        \Flagport\Flagport::assertEvaluated('ui-improvements', 2);
        \Flagport\Flagport::assertNotEvaluated('auth-improvements');
        self::assertSame(0, $client->status()['calls']);
        self::assertSame($client, \Flagport\Flagport::client());
        \Flagport\Flagport::setClient(null);
        $this->expectException(\LogicException::class);
        \Flagport\Flagport::assertEvaluated('ui-improvements');
    }

    public function testABadSettingIsAnErrorAtTheStart(): void
    {
        putenv(Overrides::VARIABLE . '=' . self::SPEC . 'bad/trailing-comma.json');
        $this->expectException(InvalidOverrides::class);
        $this->expectExceptionMessage('line 3, column 1');
        new Client([], null, new MemoryStore(), new FakeTransport([]));
    }

    public function testAMissingFileIsNamed(): void
    {
        putenv(Overrides::VARIABLE . '=/nonexistent/overrides.json');
        $this->expectException(InvalidOverrides::class);
        $this->expectExceptionMessage("'/nonexistent/overrides.json'");
        new Client([], null, new MemoryStore(), new FakeTransport([]));
    }
}
