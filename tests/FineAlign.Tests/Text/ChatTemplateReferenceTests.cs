using System.Text.Json.Nodes;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Text.Jinja;

namespace FineAlign.Tests.Text;

/// <summary>
/// The real Qwen3 and Llama 3 chat templates rendered against ../shared/tokenizers/*/chat.jsonl, whose `rendered`
/// field comes from Python Jinja2 set up as transformers' apply_chat_template (see that folder's README; for the one
/// case where @huggingface/jinja disagreed, Jinja2 is the reference), and their `ids`. 100 % is required.
/// </summary>
public class ChatTemplateReferenceTests
{
    internal static (string Template, string? Bos, string? Eos) ReadConfig(string folder)
    {
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!.AsObject();
        string? Tok(string k) => cfg[k] switch
        {
            JsonValue v when v.TryGetValue(out string? s) => s,
            JsonObject o => (string?)o["content"],
            _ => null,
        };
        return ((string)cfg["chat_template"]!, Tok("bos_token"), Tok("eos_token"));
    }

    internal static List<ChatMessage> Messages(JsonArray arr) =>
        arr.Select(m => new ChatMessage((string)m!["role"]!, (string?)m["content"] ?? "") { Fields = (JsonObject)m.DeepClone() }).ToList();

    [Theory]
    [InlineData("qwen3")]
    [InlineData("llama3")]
    public void RendersEveryReferenceCaseExactly(string model)
    {
        string folder = TestPaths.RequireShared(Path.Combine("tokenizers", model));
        var (template, bos, eos) = ReadConfig(folder);
        // The chat path's tokenization (whole string, BOS only when the template did not write it) must give
        // apply_chat_template(tokenize=True)'s ids.
        var tok = TokenizerLoader.Load(folder);
        var failures = new List<string>();
        int cases = 0;
        foreach (var line in File.ReadLines(Path.Combine(folder, "chat.jsonl")))
        {
            if (line.Length == 0) continue;
            var c = JsonNode.Parse(line)!.AsObject();
            cases++;
            var kwargs = c["kwargs"]!.AsObject().ToDictionary(kv => kv.Key, kv => JinjaValues.FromJson(kv.Value));
            var chat = new ChatTemplate(template, model, null, bos, eos, kwargs);
            string got = chat.RenderText(Messages(c["messages"]!.AsArray()), (bool)c["add_generation_prompt"]!);
            if (got != (string)c["rendered"]!) failures.Add($"{c["id"]}: got {System.Text.Json.JsonSerializer.Serialize(got)}");
            else if (!ChatTemplates.Tokenize(tok, got, []).InputIds.SequenceEqual(c["ids"]!.AsArray().Select(x => (int)x!)))
                failures.Add($"{c["id"]}: rendered right, ids differ");
        }
        Assert.True(cases >= 19, $"only {cases} cases read");
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases} differ:\n" + string.Join("\n", failures));
    }
}
