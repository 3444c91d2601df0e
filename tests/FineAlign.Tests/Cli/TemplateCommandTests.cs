using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Cli;

/// <summary><c>finealign template</c> over real CLI parsing: the marked rendering, ids, --json, and one-line errors.</summary>
public class TemplateCommandTests
{
    private static string Write(TempDir dir, string name, params string[] lines)
    {
        string p = Path.Combine(dir.Path, name);
        File.WriteAllText(p, string.Join("\n", lines) + "\n", new UTF8Encoding(false));
        return p;
    }

    private static string ByteModel(TempDir dir)
    {
        string m = Path.Combine(dir.Path, "model");
        Directory.CreateDirectory(m);
        new ByteTokenizer().Save(m);
        return m;
    }

    [Fact]
    public void Prints_RenderedText_TrainedSpans_AndIds()
    {
        using var dir = TestPaths.NewTempDir();
        string model = ByteModel(dir);
        string data = Write(dir, "d.jsonl", """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""");
        var r = CliRunner.Run("template", "--model", model, "--data", data);
        Assert.Equal(0, r.Code);
        Assert.Contains("trained spans from its {% generation %} blocks; end of turn <|im_end|> (id 260)", r.Out);
        Assert.Contains("### example 1 (line 1, 'messages'): 26 tokens, 3 trained", r.Out);
        Assert.Contains("<|bos|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n⟦Yo<|im_end|>⟧\n", r.Out);
        Assert.Contains("ids: 256 259 117 115 101 114 10 72 105 260 10 259 97 115 115 105 115 116 97 110 116 10 ⟦89 111 260⟧ 10", r.Out);

        var j = CliRunner.Run("template", "--model", model, "--data", data, "--json");
        Assert.Equal(0, j.Code);
        var o = JsonNode.Parse(j.Out.Trim())!.AsObject();
        Assert.Equal(["Yo<|im_end|>"], o["trained"]!.AsArray().Select(x => (string)x!));
        Assert.Equal(3, o["loss_mask"]!.AsArray().Sum(x => (int)x!));
        Assert.StartsWith("<|bos|><|im_start|>user", (string)o["text"]!);
    }

    [Fact]
    public void BadInput_OneLineErrorsNamingFileAndWhat()
    {
        using var dir = TestPaths.NewTempDir();
        string model = ByteModel(dir);
        string data = Write(dir, "d.jsonl", """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""");

        string syntax = Write(dir, "broken.jinja", "{% for m in messages %}", "{{ m.content }", "{% endfor %}");
        var r = CliRunner.Run("template", "-m", model, "-d", data, "--chat-template", syntax);
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: {syntax}: chat template syntax error at line 2, column 1: tag '{{{{' is never closed with '}}}}'", r.Err.Trim());

        string raising = Write(dir, "strict.jinja", "{% if messages[0].role != 'system' %}{{ raise_exception('a system message must come first') }}{% endif %}");
        r = CliRunner.Run("template", "-m", model, "-d", data, "--chat-template", raising);
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: {data}:1: field 'messages': the chat template ({raising}) refused the messages: a system message must come first", r.Err.Trim());

        string noRole = Write(dir, "norole.jsonl", """{"messages": [{"content": "Hi"}, {"role": "assistant", "content": "Yo"}]}""");
        r = CliRunner.Run("template", "-m", model, "-d", noRole);
        Assert.Equal(1, r.Code);
        Assert.Equal($"error: {noRole}:1: field 'messages[0].role': missing (expected a string)", r.Err.Trim());

        string undefinedUse = Write(dir, "bug.jinja", "{{ messages[0].content + extra }}");
        r = CliRunner.Run("template", "-m", model, "-d", data, "--chat-template", undefinedUse);
        Assert.Equal(1, r.Code);
        Assert.Contains($"{undefinedUse}: chat template error at line 1: 'extra' is undefined", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
    }
}
