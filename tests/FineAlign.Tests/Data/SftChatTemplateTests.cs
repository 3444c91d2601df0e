using System.Text;
using FineAlign.Data;
using FineAlign.Tests.Support;
using FineAlign.Tests.Text;
using FineAlign.Text;

namespace FineAlign.Tests.Data;

/// <summary>SFT with any Jinja template: template files, named templates, chat_template.jinja, derived masks, tools.</summary>
public class SftChatTemplateTests
{
    private static readonly ByteTokenizer Tok = new();

    private static string Write(TempDir dir, string name, params string[] lines)
    {
        string p = Path.Combine(dir.Path, name);
        File.WriteAllText(p, string.Join("\n", lines) + "\n", new UTF8Encoding(false));
        return p;
    }

    // Llama 3's layout on the byte tokenizer's specials: header, reply, end-of-turn; no generation blocks.
    private const string HeaderTemplate =
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n\n{{ m.content | trim }}<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n\n{% endif %}";

    [Fact]
    public void TemplateFile_MaskDerivedFromPrefixes_OnlyRepliesAndEndOfTurn()
    {
        using var dir = TestPaths.NewTempDir();
        string tpl = Write(dir, "header.jinja", HeaderTemplate);
        string data = Write(dir, "d.jsonl", """{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " Yo "}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}""");
        var ds = SftDataset.Load(data, Tok, new SftOptions { ChatTemplate = tpl });
        var ex = Assert.Single(ds.Examples);
        Assert.Equal(["Yo<|im_end|>", "A<|im_end|>"], ChatTemplatesTests.TargetRuns(Tok, ex));
        // The template writes bos_token itself: exactly one BOS.
        Assert.Equal("<|bos|><|im_start|>user\n\nHi<|im_end|><|im_start|>assistant\n\nYo<|im_end|><|im_start|>user\n\nQ<|im_end|><|im_start|>assistant\n\nA<|im_end|>",
            Tok.Decode(ex.InputIds, skipSpecialTokens: false));
        // Generation prompts are a prefix of the trained sequence, the first trained token right after.
        var enc = new SftEncoder(Tok, new SftOptions { ChatTemplate = tpl });
        int[] prompt = enc.EncodePrompt([new("user", "Hi")]);
        Assert.Equal(prompt, ex.InputIds[..prompt.Length]);
        Assert.True(ex.LossMask[prompt.Length]);
    }

    [Fact]
    public void ModelFolder_ChatTemplateJinja_AndNamedTemplates()
    {
        using var dir = TestPaths.NewTempDir();
        string model = Path.Combine(dir.Path, "m");
        Directory.CreateDirectory(model);
        Tok.Save(model);
        var tok = TokenizerLoader.Load(model);
        // chat_template.jinja beside tokenizer_config.json wins over tokenizer_config's chat_template (newer transformers).
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"), HeaderTemplate + "\n");
        var own = ChatTemplates.Resolve(null, tok, model);
        Assert.EndsWith("chat_template.jinja", own.Source);
        Assert.Equal("<|bos|><|im_start|>user\n\nx<|im_end|>", own.RenderText([new("user", "x")], false));   // the file's trailing newline is dropped, as Jinja2 does
        // Named templates: additional_chat_templates/NAME.jinja, chosen with --chat-template NAME.
        Directory.CreateDirectory(Path.Combine(model, "additional_chat_templates"));
        File.WriteAllText(Path.Combine(model, "additional_chat_templates", "tool_use.jinja"), "TOOLS:{{ messages | length }}");
        Assert.Equal("TOOLS:1", ChatTemplates.Resolve("tool_use", tok, model).RenderText([new("user", "x")], false));
        var e = Assert.Throws<FineAlignException>(() => ChatTemplates.Resolve("nope", tok, model));
        Assert.Contains("unknown chat template 'nope'", e.Message);
        Assert.Contains("tool_use", e.Message);
    }

    [Fact]
    public void PreferencePairs_UseTheModelFolders_ChatTemplateJinja()
    {
        // dpo, rm, kto, bco, alol and eval-* encode conversational pairs with the model folder's template, as sft does.
        using var dir = TestPaths.NewTempDir();
        string model = Path.Combine(dir.Path, "m");
        Directory.CreateDirectory(model);
        Tok.Save(model);
        File.WriteAllText(Path.Combine(model, "chat_template.jinja"), HeaderTemplate + "\n");
        var tok = TokenizerLoader.Load(model);
        string data = Write(dir, "p.jsonl", """{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Yes"}], "rejected": [{"role": "assistant", "content": "No"}]}""");
        var pair = Assert.Single(PreferenceDataset.Load(data, tok, new PreferenceEncoding { MaxLength = 256, TemplateFolder = model }).Pairs);
        Assert.Equal("<|bos|><|im_start|>user\n\nHi<|im_end|><|im_start|>assistant\n\nYes<|im_end|>",
            tok.Decode(pair.Chosen.ToExample().InputIds, skipSpecialTokens: false));
        // Without the folder, only the tokenizer's own template (the byte tokenizer's chatml) is known: a different text.
        var plain = Assert.Single(PreferenceDataset.Load(data, tok, new PreferenceEncoding { MaxLength = 256 }).Pairs);
        Assert.NotEqual(pair.Chosen.ToExample().InputIds, plain.Chosen.ToExample().InputIds);
    }

    [Fact]
    public void ListFormChatTemplate_PicksDefault_OrNeedsAName()
    {
        using var dir = TestPaths.NewTempDir();
        string model = Path.Combine(dir.Path, "m");
        Directory.CreateDirectory(model);
        Tok.Save(model);
        string cfgPath = Path.Combine(model, "tokenizer_config.json");
        var cfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(cfgPath))!.AsObject();
        cfg["chat_template"] = new System.Text.Json.Nodes.JsonArray(
            new System.Text.Json.Nodes.JsonObject { ["name"] = "default", ["template"] = "D{{ messages[0].content }}" },
            new System.Text.Json.Nodes.JsonObject { ["name"] = "rag", ["template"] = "R{{ documents | length }}" });
        File.WriteAllText(cfgPath, cfg.ToJsonString());
        var tok = TokenizerLoader.Load(model);
        Assert.Equal("Dx", ChatTemplates.Resolve(null, tok, model).RenderText([new("user", "x")], false));
        var rag = ChatTemplates.Resolve("rag", tok, model, new Dictionary<string, object?> { ["documents"] = new List<object?> { "a", "b" } });
        Assert.Equal("R2", rag.RenderText([new("user", "x")], false));
    }

    [Fact]
    public void ToolMessagesAndToolCalls_ReachTheTemplate()
    {
        using var dir = TestPaths.NewTempDir();
        string tpl = Write(dir, "tools.jinja",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}");
        string data = Write(dir, "d.jsonl",
            """{"messages": [{"role": "user", "content": "w?"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": {"city": "Oslo"}}}]}, {"role": "tool", "content": "rain"}, {"role": "assistant", "content": "Rain."}]}""");
        var ex = SftDataset.Load(data, Tok, new SftOptions { ChatTemplate = tpl }).Examples[0];
        Assert.Equal(["CALL get {\"city\": \"Oslo\"}<|im_end|>", "Rain.<|im_end|>"], ChatTemplatesTests.TargetRuns(Tok, ex));
    }

    [Fact]
    public void NotPrefixStableTemplate_IsADataErrorNamingLineAndTemplate()
    {
        using var dir = TestPaths.NewTempDir();
        string tpl = Write(dir, "count.jinja", "{{ messages | length }}{% for m in messages %}|{{ m.content }}{% endfor %}");
        string data = Write(dir, "d.jsonl", """{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}""");
        var e = Assert.Throws<DataFormatException>(() => SftDataset.Load(data, Tok, new SftOptions { ChatTemplate = tpl }));
        Assert.Equal(1, e.Line);
        Assert.Equal("messages", e.Field);
        Assert.Contains("count.jinja", e.Message);
        Assert.Contains("not prefix-stable", e.Message);
        // The same file with every token trained needs no mask and renders fine.
        Assert.Single(SftDataset.Load(data, Tok, new SftOptions { ChatTemplate = tpl, CompletionOnlyLoss = false }).Examples);
    }
}
