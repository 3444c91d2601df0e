using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Models.Gguf;
using Xunit.Abstractions;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>
/// Real tokenizers (../shared/tokenizers, with reference encodings from Hugging Face's Rust tokenizers): the exported
/// vocabulary, loaded by llama.cpp, must tokenise the reference strings to the reference ids. This checks the
/// tokens, types, merges / scores and the pre-tokeniser name together.
/// </summary>
[Collection("gguf")]
public class RealTokenizerTests(ITestOutputHelper output)
{
    // ../shared beside the repository root (the folder holding FineAlign.slnx).
    private static readonly string SharedTokenizers = Path.GetFullPath(Path.Combine(RepoRoot(), "..", "shared", "tokenizers"));

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FineAlign.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("cannot find FineAlign.slnx above " + AppContext.BaseDirectory);
    }

    public static TheoryData<string, string, string, string> Cases => new()
    {
        { "llama3", "llama", "gpt2", "llama-bpe" },
        { "qwen3", "qwen2", "gpt2", "qwen2" },
        { "mistral", "mistral", "llama", "default" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Llama_cpp_tokenises_the_reference_strings_to_the_reference_ids(string name, string modelType, string ggmlModel, string pre)
    {
        string src = Path.Combine(SharedTokenizers, name);
        Assert.True(Directory.Exists(src), $"{src} is absent: these tests need ../shared/tokenizers beside the repository (see its README).");
        using var tmp = new TempDir();
        string gguf = ExportWithTokenizer(src, modelType, tmp);
        var f = GgufFile.Read(gguf);
        Assert.Equal(ggmlModel, f.Get<string>("tokenizer.ggml.model"));
        Assert.Equal(pre, f.Get<string>("tokenizer.ggml.pre"));

        using var engine = new LlamaCppEngine(gguf, vocabOnly: true);
        int total = 0;
        var wrong = new List<string>();
        var excused = new List<string>();
        foreach (var line in File.ReadLines(Path.Combine(src, "encode.jsonl")))
        {
            var o = JsonNode.Parse(line)!.AsObject();
            string text = o["text"]!.GetValue<string>();
            var expected = o["ids_no_special"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
            var actual = engine.Tokenize(text, addBos: false, special: true);
            total++;
            if (expected.SequenceEqual(actual)) continue;
            if (LlamaCppLimitation(name, text) is string why) { excused.Add($"{o["id"]} ({why})"); continue; }
            wrong.Add($"{o["id"]}: {Show(text)} → expected [{string.Join(",", expected)}] got [{string.Join(",", actual)}]");
        }
        output.WriteLine($"{name}: {total - wrong.Count - excused.Count}/{total} reference strings tokenised identically by llama.cpp; " +
                         $"{excused.Count} differ by llama.cpp's own limits: {string.Join(", ", excused)}");
        foreach (var w in wrong.Take(10)) output.WriteLine(w);
        Assert.Empty(wrong);
        Assert.True(excused.Count <= 6, $"{name}: {excused.Count} strings excused as llama.cpp limitations; expected a handful");
    }

    [Fact]
    public void An_o200k_style_pre_tokeniser_is_refused_by_name()
    {
        string src = Path.Combine(SharedTokenizers, "gptoss");
        Assert.True(Directory.Exists(src), $"{src} is absent: these tests need ../shared/tokenizers beside the repository (see its README).");
        using var tmp = new TempDir();
        var e = Assert.Throws<FineAlignException>(() => ExportWithTokenizer(src, "llama", tmp));
        Assert.Contains("pre-tokeniser Split regex", e.Message);
        Assert.Contains("not one llama.cpp recognises", e.Message);
    }

    /// <summary>
    /// A Hugging Face checkpoint from disk (../shared/fixtures/llama-tiny, with the byte tokenizer padded to its 320-token
    /// vocabulary): llama.cpp's log-probs on the exported file equal the independent PyTorch reference's.
    /// </summary>
    [Fact]
    public void Fixture_checkpoint_exported_gives_the_PyTorch_reference_log_probs_in_llama_cpp()
    {
        string fixture = Path.GetFullPath(Path.Combine(SharedTokenizers, "..", "fixtures", "llama-tiny"));
        Assert.True(Directory.Exists(fixture), $"{fixture} is absent: this test needs ../shared/fixtures beside the repository.");
        using var tmp = new TempDir();
        string dir = Path.Combine(tmp.Path, "m");
        Directory.CreateDirectory(dir);
        foreach (var file in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(fixture, file), Path.Combine(dir, file));
        new FineAlign.Text.ByteTokenizer().Save(dir);
        using var model = ModelIO.Load(dir);
        string gguf = GgufExporter.Export(model, dir, tmp.File("m.gguf")).Path;

        var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "expected.json")))!.AsObject();
        var ids = expected["input_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var reference = expected["token_logprobs"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        using var engine = new LlamaCppEngine(gguf);
        Assert.Equal(320, engine.VocabCount);
        var theirs = engine.LogProbs(ids);
        double max = Enumerable.Range(0, ids.Length - 1).Max(t => Math.Abs(reference[t] - theirs[t][ids[t + 1]]));
        output.WriteLine($"llama-tiny fixture: llama.cpp vs PyTorch reference max |Δ log p| {max:E2}");
        Assert.True(max <= 1e-4, $"llama.cpp on the exported fixture differs from the PyTorch reference by {max:E2}");
    }

    // A 1-layer, 8-wide model with the tokenizer's vocabulary size, saved with the tokenizer files, then exported.
    private static string ExportWithTokenizer(string src, string modelType, TempDir tmp)
    {
        var tj = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "tokenizer.json")))!.AsObject();
        int vocab = tj["model"]!["vocab"]!.AsObject().Select(kv => kv.Value!.GetValue<int>())
            .Concat(tj["added_tokens"]!.AsArray().Select(a => a!["id"]!.GetValue<int>())).Max() + 1;
        using var model = TinyModels.Create(modelType, heads: 2, kvHeads: 2, tied: true, vocab: vocab, hidden: 8, layers: 1);
        string dir = Path.Combine(tmp.Path, "m");
        ModelIO.Save(model, dir, src);
        return GgufExporter.Export(model, dir, tmp.File("m.gguf")).Path;
    }

    /// <summary>
    /// Differences that come from llama.cpp itself, not from the exported vocabulary (a GGUF from llama.cpp's own
    /// converter behaves the same): llama.cpp does not apply tokenizer.json's NFC normaliser (Qwen), and at load it
    /// turns a vocabulary token spelled "&lt;/s&gt;" into a control token, so that text becomes one token.
    /// </summary>
    private static string? LlamaCppLimitation(string name, string text)
    {
        if (name != "qwen3") return null;
        if (text.Normalize(System.Text.NormalizationForm.FormC) != text) return "NFC normaliser not applied by llama.cpp";
        if (text.Contains("</s>", StringComparison.Ordinal)) return "llama.cpp treats the '</s>' token as control";
        return null;
    }

    private static string Show(string s) => System.Text.Json.JsonSerializer.Serialize(s.Length > 60 ? s[..60] + "…" : s);
}
