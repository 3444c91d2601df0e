using System.Text.Json.Nodes;
using FineAlign.Text.Jinja;

namespace FineAlign.Tests.Text.Jinja;

/// <summary>The interpreter on its own: whitespace rules, statements, expressions, filters, tests, Undefined, errors.
/// Expected strings are what Python Jinja2 3.1 prints with trim_blocks and lstrip_blocks (transformers' setup).</summary>
public class JinjaTests
{
    private static string R(string template, string? json = null)
    {
        var vars = json is null ? new Dictionary<string, object?>()
            : ((JinjaDict)JinjaValues.FromJson(JsonNode.Parse(json))!).ToDictionary(kv => kv.Key, kv => kv.Value);
        return JinjaTemplate.Parse(template).Render(vars).Text;
    }

    [Fact]
    public void Whitespace_TrimBlocks_LstripBlocks_AndDashes()
    {
        // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
        Assert.Equal("a\nb", R("{% if true %}\na\n{% endif %}\nb\n"));
        Assert.Equal("    x\n", R("{% for i in [1] %}\n    x\n    {% endfor %}\n"));
        Assert.Equal("ab", R("a  \n  {%- if true -%}  \n  b{% endif %}"));
        Assert.Equal("a\n", R("a\n{# comment #}\n"));             // comments are trimmed like blocks
        Assert.Equal("x  y", R("x  {{ '' }}y"));                   // variable tags are not lstripped
        Assert.Equal("1", R("{{ 1 }}\n"));                          // one trailing newline of the source is dropped
        Assert.Equal("1\n", R("{{ 1 }}\n\n"));
        Assert.Equal("  x", R("  {%+ if true %}x{% endif %}"));   // + disables lstrip
        Assert.Equal("\nx", R("{% if true +%}\nx{% endif %}"));     // and on the right, trim
        Assert.Equal("{{ raw }} {% x %}", R("{% raw %}{{ raw }} {% x %}{% endraw %}"));
    }

    [Fact]
    public void Loops_LoopVariables_ElseAndFilter()
    {
        Assert.Equal("1/3 0 F;2/3 1 ;3/3 2 L;", R("{% for x in xs %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} {{ 'F' if loop.first }}{{ 'L' if loop.last }};{% endfor %}", """{"xs": [5, 6, 7]}"""));
        Assert.Equal("3210|4321", R("{% for x in xs %}{{ loop.revindex0 }}{% endfor %}|{% for x in xs %}{{ loop.revindex }}{% endfor %}", """{"xs": [1, 2, 3, 4]}"""));
        Assert.Equal("-5 6,56 7,67 ", R("{% for x in xs %}{{ loop.previtem }}{{ '-' if loop.first }}{{ x }} {% if not loop.last %}{{ loop.nextitem }},{% endif %}{% endfor %}", """{"xs": [5, 6, 7]}"""));
        Assert.Equal("none", R("{% for x in [] %}x{% else %}none{% endfor %}"));
        Assert.Equal("24", R("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{% endfor %}"));
        Assert.Equal("a=1;b=2;", R("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", """{"d": {"a": 1, "b": 2}}"""));
        Assert.Equal("12", R("{% for x in [1, 2, 3] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"));
        Assert.Equal("13", R("{% for x in [1, 2, 3] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% endfor %}"));
    }

    [Fact]
    public void Scoping_SetInLoopDoesNotLeak_NamespaceDoes()
    {
        Assert.Equal("0", R("{% set n = 0 %}{% for x in [1, 2] %}{% set n = n + x %}{% endfor %}{{ n }}"));
        Assert.Equal("3", R("{% set ns = namespace(n=0) %}{% for x in [1, 2] %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}"));
        Assert.Equal("yes", R("{% if true %}{% set v = 'yes' %}{% endif %}{{ v }}"));
        Assert.Equal("<b>x</b>|", R("{% macro b(t, end='|') %}<b>{{ t }}</b>{{ end }}{% endmacro %}{{ b('x') }}"));
        Assert.Equal("AB", R("{% set s %}A{{ 'B' }}{% endset %}{{ s }}"));
    }

    [Fact]
    public void Expressions_OperatorsAndPrecedence()
    {
        Assert.Equal("7|2.5|2|-2|3|8|ab|a1|True|False", R("{{ 1 + 2 * 3 }}|{{ 5 / 2 }}|{{ 5 // 2 }}|{{ -5 // 3 }}|{{ -5 % 3 + 2 }}|{{ 2 ** 3 }}|{{ 'a' + 'b' }}|{{ 'a' ~ 1 }}|{{ 1 < 2 < 3 }}|{{ not 1 }}"));
        Assert.Equal("b|x|True|True|False", R("{{ 'a' if false else 'b' }}|{{ 'x' if true }}|{{ 'ell' in 'hello' }}|{{ 2 not in [1] }}|{{ none is not none }}"));
        Assert.Equal("cba|bc|[3, 2]|el", R("{{ 'abc'[::-1] }}|{{ 'abc'[1:] }}|{{ [1, 2, 3][:0:-1] }}|{{ 'hello'[1:3] }}"));
        Assert.Equal("{'a': [1, 'x', None, True]}|It's", R("{{ {'a': [1, 'x', none, true]} }}|{{ \"It's\" }}"));
        Assert.Equal("A|0|x", R("{{ 'a'.upper() }}|{{ [] | length }}|{{ ('x' ~ '') }}"));
        // filters bind tighter than +: message['content'] | trim
        Assert.Equal("<x>", R("{{ '<' + c | trim + '>' }}", """{"c": "  x  "}"""));
    }

    [Fact]
    public void StringAndDictMethods()
    {
        Assert.Equal("b|a  |  a|xyx|True|False", R("{{ '\\nb\\n'.strip() }}|{{ '  a  '.lstrip() }}|{{ '  a  '.rstrip() }}|{{ 'xyxzz'.rstrip('z') }}|{{ 'abc'.startswith(('x', 'a')) }}|{{ 'abc'.endswith('b') }}"));
        Assert.Equal("['a', 'b,c']|['a,b', 'c']|['x', 'y']|Hello World|Hello world|2|-1", R("{{ 'a,b,c'.split(',', 1) }}|{{ 'a,b,c'.rsplit(',', 1) }}|{{ ' x  y '.split() }}|{{ 'hello world'.title() }}|{{ 'hELLO WORLD'.capitalize() }}|{{ 'abcb'.find('c') }}|{{ 'a'.find('z') }}"));
        Assert.Equal("1|d|['a', 'b']|[1, 2]|x-y", R("{{ d.get('a') }}|{{ d.get('z', 'd') }}|{{ d.keys() | list }}|{{ d.values() | list }}|{{ 'x_y'.replace('_', '-') }}", """{"d": {"a": 1, "b": 2}}"""));
        Assert.Equal("content after", R("{{ c.split('</think>')[-1].lstrip('\\n') }}", """{"c": "<think>\nr\n</think>\n\ncontent after"}"""));
    }

    [Fact]
    public void Filters()
    {
        Assert.Equal("a, b, c|3|a|c|X|2", R("{{ xs | join(', ') }}|{{ xs | length }}|{{ xs | first }}|{{ xs | last }}|{{ 'x' | upper }}|{{ [1, 1, 2] | unique | list | length }}", """{"xs": ["a", "b", "c"]}"""));
        Assert.Equal("dflt|0|dflt|3|4.0|3|2.6|['c', 'b']", R("{{ u | default('dflt') }}|{{ 0 | default('dflt') }}|{{ '' | default('dflt', true) }}|{{ '3' | int }}|{{ 4 | float }}|{{ -3 | abs }}|{{ 2.55 | round(1) }}|{{ ['b', 'c'] | reverse | list }}"));
        Assert.Equal("user,user|assistant|b", R("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='role') | join(',') }}|{{ ms | rejectattr('role', 'eq', 'user') | map(attribute='role') | first }}|{{ ms | map(attribute='c') | last }}",
            """{"ms": [{"role": "user", "c": "a"}, {"role": "assistant", "c": "x"}, {"role": "user", "c": "b"}]}"""));
        Assert.Equal("  a\n  b|a\n  b|[['a', 1], ['b', 2]]|2|Hello World", R("{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\nb' | indent(2) }}|{{ d | dictsort }}|{{ d | count }}|{{ 'hello world' | title }}", """{"d": {"b": 2, "a": 1}}"""));
    }

    [Fact]
    public void ToJson_HasTransformersSemantics()
    {
        // json.dumps(ensure_ascii=False): ", " and ": " separators, non-ASCII kept, no HTML escaping, order kept.
        Assert.Equal("""{"b": 1, "a": [true, null, 1.5, "é<&>\"\n"]}""", R("{{ d | tojson }}", """{"d": {"b": 1, "a": [true, null, 1.5, "é<&>\"\n"]}}"""));
        Assert.Equal("{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": {}\n}", R("{{ d | tojson(indent=2) }}", """{"d": {"a": [1, 2], "e": {}}}"""));
        Assert.Equal("""{"a": 1, "b": 2}""", R("{{ d | tojson(sort_keys=true) }}", """{"d": {"b": 2, "a": 1}}"""));
        Assert.Equal("\"\\u00e9\"", R("{{ 'é' | tojson(ensure_ascii=true) }}"));
    }

    [Fact]
    public void Tests()
    {
        Assert.Equal("TFTTFTT", R("{{ 'T' if x is defined else 'F' }}{{ 'T' if y is defined else 'F' }}{{ 'T' if n is none else 'F' }}{{ 'T' if s is string else 'F' }}{{ 'T' if 1 is string else 'F' }}{{ 'T' if d is mapping else 'F' }}{{ 'T' if l is iterable else 'F' }}",
            """{"x": 1, "n": null, "s": "a", "d": {}, "l": []}"""));
        Assert.Equal("TTFTTF", R("{{ 'T' if 1 is number else 'F' }}{{ 'T' if 1 is integer else 'F' }}{{ 'T' if 1.0 is integer else 'F' }}{{ 'T' if false is false else 'F' }}{{ 'T' if 'a' is equalto 'a' else 'F' }}{{ 'T' if 3 is divisibleby 2 else 'F' }}"));
        Assert.Equal("T", R("{{ 'T' if e is defined and e is false }}", """{"e": false}"""));
    }

    [Fact]
    public void Undefined_BehavesAsJinja2Default()
    {
        Assert.Equal("[]|0|F|x|", R("[{{ u }}]|{{ u | length }}|{{ 'T' if u else 'F' }}|{{ u ~ 'x' }}|{% for a in u %}a{% endfor %}"));
        Assert.Equal("", R("{{ d.missing }}", """{"d": {}}"""));                 // a missing key is undefined ...
        var e = Assert.Throws<JinjaException>(() => R("{{ u.attr }}"));          // ... an attribute of undefined is an error
        Assert.Contains("'u' is undefined", e.Message);
        Assert.Contains("'u' is undefined", Assert.Throws<JinjaException>(() => R("{{ u + 1 }}")).Message);
        Assert.Contains("can only concatenate str", Assert.Throws<JinjaException>(() => R("{{ 'a' + 1 }}")).Message);
        Assert.Contains("is not iterable", Assert.Throws<JinjaException>(() => R("{{ 'x' in n }}", """{"n": null}""")).Message);
    }

    [Fact]
    public void Errors_NameLineAndColumn()
    {
        var e = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("ok\n{% if x %}\nno end"));
        Assert.Equal(2, e.Line);
        Assert.Contains("never closed", e.Message);
        var e2 = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("a\n\n  {{ 1 + }}"));
        Assert.Equal(3, e2.Line);
        Assert.Equal(10, e2.Column);
        Assert.Contains("unknown filter 'nope'", Assert.Throws<JinjaException>(() => R("\n{{ 1 | nope }}")).Message);
        Assert.Contains("line 2", Assert.Throws<JinjaException>(() => R("\n{{ 1 | nope }}")).Message);
        Assert.Contains("'{% endfor %}' does not close '{% if %}'", Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{% if x %}{% endfor %}")).Message);
        var raised = Assert.Throws<JinjaRaisedException>(() => R("{{ raise_exception('Roles must alternate') }}"));
        Assert.Equal("Roles must alternate", raised.TemplateMessage);
    }

    [Fact]
    public void GenerationBlocks_RecordSpans_AndStrftime()
    {
        var t = JinjaTemplate.Parse("u:{% generation %}{{ a }}!{% endgeneration %} v:{% generation %}B{% endgeneration %}");
        Assert.True(t.HasGenerationBlocks);
        var r = t.Render(new Dictionary<string, object?> { ["a"] = "A" });
        Assert.Equal("u:A! v:B", r.Text);
        Assert.Equal([new TextSpan(2, 4), new TextSpan(7, 8)], r.GenerationSpans);
        var b = new JinjaBuiltins { Now = () => new DateTime(2026, 3, 5, 14, 7, 9) };
        Assert.Equal("05 Mar 2026|March 5|14:07:09 PM", JinjaTemplate.Parse("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%B %-d') }}|{{ strftime_now('%H:%M:%S %p') }}").Render(new Dictionary<string, object?>(), b).Text);
    }
}
