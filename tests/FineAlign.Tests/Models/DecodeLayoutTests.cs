using FineAlign.Generation;
using FineAlign.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

/// <summary>
/// The decode layout (issue #18, <see cref="TransposedWeight"/>): decode steps read Wᵀ copies of the LM head and the fused
/// q/k/v and gate/up weights. Same numbers within float rounding, one copy per cache (never per step), never stale.
/// </summary>
public class DecodeLayoutTests
{
    private static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().to_type(ScalarType.Float64).item<double>();

    /// <summary>A prefill of <paramref name="ids"/> but its last 3 tokens, then 3 one-token steps; the head through <see cref="CausalLM.DecodeLmHead"/>.</summary>
    private static Tensor Steps(CausalLM model, Tensor ids, bool layout)
    {
        using var _ = no_grad();
        long t = ids.shape[1];
        using var cache = model.NewCache((int)t);
        cache.DecodeLayout = layout;
        var parts = new List<Tensor> { model.DecodeLmHead(model.ForwardHidden(ids.narrow(1, 0, t - 3), null, cache), cache) };
        for (long s = t - 3; s < t; s++)
            parts.Add(model.DecodeLmHead(model.ForwardHidden(ids.narrow(1, s, 1), null, cache), cache));
        return cat(parts, 1);
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen2-bias")]      // tied head (the embedding's Wᵀ), q/k/v biases
    [InlineData("llama-allbias")]   // gate/up biases too
    public void Decode_layout_steps_equal_the_full_forward_and_the_linear_layout(string arch)
    {
        using var model = ModelFactory.Create(ModelTests.ByName(arch), 21);
        using var ids = randint(0, model.Config.VocabSize, new long[] { 2, 9 }, dtype: ScalarType.Int64);
        Tensor full;
        using (no_grad()) full = model.Forward(ids);
        var on = Steps(model, ids, layout: true);
        var off = Steps(model, ids, layout: false);
        Assert.True(MaxDiff(full, on) < 1e-5, $"layout on vs full forward: {MaxDiff(full, on)}");
        Assert.True(MaxDiff(off, on) < 1e-5, $"layout on vs off: {MaxDiff(off, on)}");
        var llama = (LlamaForCausalLM)model;
        Assert.Equal(1, llama.DecodeStats.HeadCopies);   // 3 steps through one cache: one copy, made at the first decode step
    }

    [Fact]
    public void One_copy_per_generation_call_and_one_rotary_table_per_model()
    {
        using var model = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 22);
        var llama = (LlamaForCausalLM)model;
        var fused = model.modules().OfType<LlamaAttention>().Select(a => typeof(LlamaAttention)
            .GetField("_qkv", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(a) as FusedProjections);
        var prompts = new[] { new[] { 3, 4, 5, 6 }, new[] { 7, 8 } };
        var o = new GenerationOptions { MaxNewTokens = 10, DoSample = false, EosTokenIds = Array.Empty<int>() };
        TextGenerator.Generate(model, prompts, o);
        Assert.Equal((1, 1), llama.DecodeStats);
        Assert.All(fused, f => Assert.Equal(1, f!.TransposedCopies));
        TextGenerator.Generate(model, prompts, o);
        Assert.Equal((2, 1), llama.DecodeStats);   // a new call copies again (the weights may have changed); the table is kept

        // Too few steps to pay a copy back: the call keeps nn.Linear's layout.
        TextGenerator.Generate(model, prompts, o with { MaxNewTokens = TextGenerator.MinStepsForDecodeLayout - 1 });
        Assert.Equal(2, llama.DecodeStats.HeadCopies);
    }

    [Fact]
    public void A_weight_write_between_two_calls_reaches_the_next_call()
    {
        using var model = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 23);
        using var twin = ModelFactory.Create(ModelTests.ByName("llama-gqa"), 23);
        var prompts = new[] { new[] { 3, 4, 5, 6, 9, 10 } };
        var o = new GenerationOptions { MaxNewTokens = 12, DoSample = false, EosTokenIds = Array.Empty<int>() };
        var first = TextGenerator.Generate(model, prompts, o);

        // What an optimizer step or weight sync does between rollouts: in-place writes to the head and a fused projection.
        using (no_grad())
            foreach (var m in new[] { model, twin })
                foreach (var (name, p) in m.named_parameters())
                    if (name == "lm_head.weight" || name.EndsWith("0.self_attn.q_proj.weight") || name.EndsWith("1.mlp.up_proj.weight"))
                        p.copy_(p.flip(0) * 3.0);
        var second = TextGenerator.Generate(model, prompts, o);
        var fresh = TextGenerator.Generate(twin, prompts, o);   // never decoded before the write
        Assert.NotEqual(first[0].Tokens, second[0].Tokens);
        Assert.Equal(fresh[0].Tokens, second[0].Tokens);
        for (int t = 0; t < fresh[0].LogProbs.Length; t++)
            Assert.True(Math.Abs(fresh[0].LogProbs[t] - second[0].LogProbs[t]) < 1e-5, $"step {t}");
    }
}
