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
    /// <summary>f16 matrices (norms/biases stay f32): weight rounding of ~2^-11 relative moves these log-probs by ~1e-3.</summary>
    private const double F16Tolerance = 2e-2;

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

    [Theory]
    [MemberData(nameof(Families))]
    public void F16_log_probs_match_llama_cpp_within_the_looser_bound(string type, int heads, int kvHeads, bool tied)
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create(type, heads, kvHeads, tied, seed: 3);
        string dir = TinyModels.Save(model, tmp.Path, type);
        string gguf = GgufExporter.Export(model, dir, tmp.File(type + "-f16.gguf"), GgmlType.F16).Path;
        var ids = TinyModels.RandomIds(32, 261, seed: 11);
        var (ours, _) = TinyModels.LogProbs(model, ids);
        using var engine = new LlamaCppEngine(gguf);
        var theirs = engine.LogProbs(ids);
        double max = Enumerable.Range(0, ids.Length - 1).Max(t => Math.Abs(ours[t] - theirs[t][ids[t + 1]]));
        output.WriteLine($"{type} f16: max |Δ log p| {max:E2}");
        Assert.True(max <= F16Tolerance, $"{type} f16: per-token log-prob differs by {max:E2} > {F16Tolerance:E0}");
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
