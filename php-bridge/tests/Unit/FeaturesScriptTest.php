<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\FeaturesScript;
use PHPUnit\Framework\TestCase;

final class FeaturesScriptTest extends TestCase
{
    public function testNestsChildrenUnderParentsWithValue(): void
    {
        $json = FeaturesScript::json([
            'ui-improvements.dropdown-fixes' => true,
            'ui-improvements' => false,
            'solo' => 3,
            'orphan.child' => 'x',
            'obj' => ['a' => 1.5],
            'a.b.c' => true,
            'a' => 1,
        ]);
        self::assertSame(
            '{"a":{"_value":1,"b":{"c":true}},"obj":{"a":1.5},"orphan":{"child":"x"},"solo":3,'
            . '"ui-improvements":{"_value":false,"dropdown-fixes":true}}',
            $json,
        );
        self::assertSame('{}', FeaturesScript::json([]));
    }

    public function testScriptCannotBeClosedByAValue(): void
    {
        $html = FeaturesScript::render(['x' => '</script><script>alert(1)</script>', 'y' => "'\"&<!--"]);
        self::assertSame(1, substr_count(strtolower($html), '</script'));
        self::assertStringNotContainsString('<!--', $html);
        $json = substr($html, strlen('<script>window.features = '), -strlen(';</script>'));
        self::assertSame(
            ['x' => '</script><script>alert(1)</script>', 'y' => "'\"&<!--"],
            json_decode($json, true),
        );
        self::assertStringContainsString('nonce="n&quot;1"', FeaturesScript::render([], 'n"1'));
    }

    public function testSelect(): void
    {
        $values = ['ui' => true, 'ui.a' => true, 'uix' => true, 'ops.b' => false];
        self::assertSame(['ui' => true, 'ui.a' => true], FeaturesScript::select($values, ['ui']));
        self::assertSame(['ui' => true, 'uix' => true, 'ops.b' => false], FeaturesScript::select($values, null, ['ui.a']));
    }
}
