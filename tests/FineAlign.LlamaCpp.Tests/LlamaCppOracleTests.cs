using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Models.Gguf;
using FineAlign.Text;
using Xunit.Abstractions;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>
/// llama.cpp is the oracle for the GGUF export: the exported file, loaded by llama.cpp (flash attention off, f32 KV
/// cache), gives the same per-token log-probs as FineAlign on the same ids, and the same greedy continuation.
/// </summary>
[Collection("gguf")]
public class LlamaCppOracleTests(ITestOutputHelper output)
{
    /// <summary>f32 file: both engines compute in fp32; only summation order differs.</summary>
    private const double F32Tolerance = 1e-4;
    /// <summary>
    /// Half-precision matrices (norms and biases stay f32). ggml also rounds the activations to the weights' type for
    /// the dot products, so the error is not that of rounded weights alone: with these peaked test models (weights of
    /// std 0.2, log-probs around −7) f16 files differ by ≤ 1.1e-2 and bf16 files by ≤ 1e-1 (measured); bounds 3e-2 and 2.5e-1.
    /// </summary>
    private const double F16Tolerance = 3e-2, BF16Tolerance = 2.5e-1;

    public static TheoryData<string, int, int, bool> Families => new()
    {
        { "llama", 4, 4, false },     // multi-head attention, untied output
        { "mistral", 4, 2, true },    // grouped-query attention, tied embeddings (output tensor left out)
        { "qwen2", 4, 2, false },     // q/k/v biases, NeoX rotary (no permutation)
    };

    [Theory]
    [MemberData(nameof(Families))]
    public void F32_log_probs_match_llama_cpp_and_greedy_tokens_agree(string type, int heads, int kvHeads, bool tied)
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create(type, heads, kvHeads, tied);
        string dir = TinyModels.Save(model, tmp.Path, type);
        string gguf = GgufExporter.Export(model, dir, tmp.File(type + ".gguf")).Path;
        var ids = TinyModels.RandomIds(40, 261, seed: 7);

        var (ours, oursAll) = TinyModels.LogProbs(model, ids);
        using var engine = new LlamaCppEngine(gguf);
        Assert.Equal(261, engine.VocabCount);
        var theirs = engine.LogProbs(ids);
        double maxTarget = 0, maxAll = 0;
        for (int t = 0; t < ids.Length - 1; t++)
        {
            maxTarget = Math.Max(maxTarget, Math.Abs(ours[t] - theirs[t][ids[t + 1]]));
            for (int v = 0; v < 261; v++) maxAll = Math.Max(maxAll, Math.Abs(oursAll[t][v] - theirs[t][v]));
        }
        output.WriteLine($"{type}: max |Δ log p| of the fixed ids {maxTarget:E2}, over the whole vocabulary {maxAll:E2}; mean log p {ours.Average():F3}");
        Assert.True(maxTarget <= F32Tolerance, $"{type}: per-token log-prob differs from llama.cpp by {maxTarget:E2} > {F32Tolerance:E0}");
        Assert.True(maxAll <= F32Tolerance, $"{type}: full log-softmax differs from llama.cpp by {maxAll:E2}");

        // Greedy: 24 new tokens after a 12-token prompt, no early stop.
        var prompt = ids[..12];
        var fine = TextGenerator.Generate(model, new[] { prompt }, new GenerationOptions
        {
            MaxNewTokens = 24, DoSample = false, EosTokenIds = Array.Empty<int>(),
        })[0].Tokens;
        var llama = engine.Greedy(prompt, 24);
        output.WriteLine($"{type}: greedy {string.Join(' ', fine)}");
        Assert.Equal(fine, llama);
        Assert.True(fine.Distinct().Count() > 3, "the greedy continuation should not be one repeated token (a weak check)");
    }

    /// <summary>config.json rope_scaling: "linear" becomes GGUF's rope.scaling keys, "llama3" the rope_freqs tensor.</summary>
    [Theory]
    [InlineData("{\"type\": \"linear\", \"factor\": 4.0}")]
    [InlineData("{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 16}")]
    public void Rope_scaling_log_probs_match_llama_cpp(string ropeScaling)
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create("llama", 4, 2, tied: true, seed: 5,
            extra: new JsonObject { ["rope_scaling"] = JsonNode.Parse(ropeScaling), ["rope_theta"] = 500000.0 });
        string dir = TinyModels.Save(model, tmp.Path, "r");
        string gguf = GgufExporter.Export(model, dir, tmp.File("r.gguf")).Path;
        var ids = TinyModels.RandomIds(64, 261, seed: 13);
        var (ours, _) = TinyModels.LogProbs(model, ids);
        using var engine = new LlamaCppEngine(gguf);
        var theirs = engine.LogProbs(ids);
        double max = Enumerable.Range(0, ids.Length - 1).Max(t => Math.Abs(ours[t] - theirs[t][ids[t + 1]]));
        output.WriteLine($"rope_scaling {ropeScaling}: max |Δ log p| {max:E2}");
        Assert.True(max <= F32Tolerance, $"rope_scaling {ropeScaling}: differs from llama.cpp by {max:E2}");
    }

    public static TheoryData<string, int, int, bool, string> HalfCases => new()
    {
        { "llama", 4, 4, false, "f16" }, { "mistral", 4, 2, true, "f16" }, { "qwen2", 4, 2, false, "f16" },
        { "llama", 4, 4, false, "bf16" }, { "qwen2", 4, 2, false, "bf16" },
    };

    [Theory]
    [MemberData(nameof(HalfCases))]
    public void Half_precision_log_probs_match_llama_cpp_within_the_looser_bound(string type, int heads, int kvHeads, bool tied, string ggml)
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create(type, heads, kvHeads, tied, seed: 3);
        string dir = TinyModels.Save(model, tmp.Path, type);
        string gguf = GgufExporter.Export(model, dir, tmp.File($"{type}-{ggml}.gguf"), GgufExporter.ParseType(ggml)).Path;
        var ids = TinyModels.RandomIds(32, 261, seed: 11);
        var (ours, _) = TinyModels.LogProbs(model, ids);
        using var engine = new LlamaCppEngine(gguf);
        var theirs = engine.LogProbs(ids);
        double max = Enumerable.Range(0, ids.Length - 1).Max(t => Math.Abs(ours[t] - theirs[t][ids[t + 1]]));
        double bound = ggml == "f16" ? F16Tolerance : BF16Tolerance;
        output.WriteLine($"{type} {ggml}: max |Δ log p| {max:E2} (bound {bound:E1})");
        Assert.True(max <= bound, $"{type} {ggml}: per-token log-prob differs by {max:E2} > {bound:E1}");
        Assert.True(max > 1e-6, $"{type} {ggml}: identical to fp32 to 1e-6, so the file cannot hold half-precision matrices");
    }

    /// <summary>
    /// Negative control: the same file with the q/k rows written in transformers' order (no permutation) must fail
    /// the f32 comparison, so the test above really checks the rotary layout.
    /// </summary>
    [Theory]
    [InlineData("llama", 4, 4)]
    [InlineData("mistral", 4, 2)]
    public void Without_the_qk_permutation_the_comparison_fails(string type, int heads, int kvHeads)
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create(type, heads, kvHeads, tied: true);
        string dir = TinyModels.Save(model, tmp.Path, type);
        string gguf = GgufExporter.Export(model, dir, tmp.File("wrong.gguf")).Path;
        // Overwrite attn_q / attn_k data in place with the unpermuted HF rows (same size, same offsets).
        var f = GgufFile.Read(gguf);
        var sd = model.state_dict();
        using (var s = File.OpenWrite(gguf))
            for (int l = 0; l < model.Config.NumLayers; l++)
                foreach (var (hf, g) in new[] { ("q_proj", "attn_q"), ("k_proj", "attn_k") })
                {
                    s.Position = f.DataStart + (long)f.Tensor($"blk.{l}.{g}.weight").Offset;
                    s.Write(sd[$"model.layers.{l}.self_attn.{hf}.weight"].contiguous().bytes);
                }
        var ids = TinyModels.RandomIds(40, 261, seed: 7);
        var (ours, _) = TinyModels.LogProbs(model, ids);
        using var engine = new LlamaCppEngine(gguf);
        var theirs = engine.LogProbs(ids);
        double max = Enumerable.Range(0, ids.Length - 1).Max(t => Math.Abs(ours[t] - theirs[t][ids[t + 1]]));
        output.WriteLine($"{type} without permutation: max |Δ log p| {max:E2}");
        Assert.True(max > 100 * F32Tolerance, $"unpermuted q/k should break the comparison, but max |Δ| = {max:E2}");
    }

    [Fact]
    public void Byte_tokenizer_vocabulary_tokenises_like_FineAlign_in_llama_cpp()
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create("llama", 4, 4, tied: true);
        string dir = TinyModels.Save(model, tmp.Path, "b");
        string gguf = GgufExporter.Export(model, dir, tmp.File("b.gguf")).Path;
        using var engine = new LlamaCppEngine(gguf, vocabOnly: true);
        var tok = new ByteTokenizer();
        foreach (var text in new[] { "Hello, world!", "  two  spaces\n\nand tabs\t.", "héllo wörld — ünïcode 日本語 🙂", "<|im_start|>user\nhi<|im_end|>\n" })
        {
            var expected = tok.Encode(text).Prepend(256).ToArray();
            Assert.Equal(expected, engine.Tokenize(text, addBos: true, special: true));
        }
        Assert.Equal(256, (int)engine.Weights.Vocab.BOS!.Value);
        Assert.Equal(257, (int)engine.Weights.Vocab.EOS!.Value);
    }
}
