using FineAlign.Data;
using FineAlign.Models;
using FineAlign.Tests.Support;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

/// <summary>
/// DPO's reference-log-prob cache key under LoRA (issue #15). The reference is the base with the adapters off, a view
/// that owns no tensors, so the key used to hash nothing: every base model got the same key and a cache written for
/// one base was read back for another.
/// </summary>
[Collection("Serial torch RNG")]
public class LoraReferenceKeyTests
{
    private static CausalLM Base(long seed) => ModelFactory.Create(TinyModels.ByteLlama(), seed);

    private static CausalLM WithLora(CausalLM model)
    {
        Lora.Apply(model, new LoraSettings { R = 2, Alpha = 4 }, seed: 3);
        return model;
    }

    [Fact]
    public void The_key_names_the_base_and_the_adapter_off_reference_and_ignores_the_trained_adapter()
    {
        using var a = WithLora(Base(1));
        using var b = WithLora(Base(2));
        string keyA = WeightCopy.Fingerprint(Lora.AdapterOff(a)), keyB = WeightCopy.Fingerprint(Lora.AdapterOff(b));
        Assert.NotEqual(keyA, keyB);                                           // another base, another key

        using var plainA = Base(1);
        Assert.NotEqual(WeightCopy.Fingerprint(plainA), keyA);                  // marked as base-with-adapter-off

        // Training moves only the adapters: the adapter-off reference, and so its key, is unchanged (resume keeps the cache).
        using (no_grad())
            foreach (var (name, p) in a.named_parameters().Where(p => p.name.Contains("lora_B")))
                p.add_(0.5);
        Assert.Equal(keyA, WeightCopy.Fingerprint(Lora.AdapterOff(a)));
        Assert.NotEqual(WeightCopy.Fingerprint(a), WeightCopy.Fingerprint(plainA)); // the policy itself (adapters on) is keyed with its adapters
        // Scoring in bf16 is another reference.
        a.ComputeDtype = ScalarType.BFloat16;
        Assert.NotEqual(keyA, WeightCopy.Fingerprint(Lora.AdapterOff(a)));
    }

    [Fact]
    public void A_cache_written_for_one_base_is_recomputed_for_another()
    {
        using var dir = TestPaths.NewTempDir();
        string path = Path.Combine(dir.Path, DpoTrainer.ReferenceCacheFile);
        var pairs = new List<EncodedPair>
        {
            new(1, new([256, 10, 11], [12, 13, 257], [true, true, true]), new([256, 10, 11], [40, 257], [true, true]), 0),
            new(2, new([256, 5], [6, 7, 8, 257], [true, true, true, true]), new([256, 5], [90, 91, 257], [true, true, true]), 0),
        };
        using var a = WithLora(Base(1));
        using var b = WithLora(Base(2));
        var first = ReferenceLogps.LoadOrCompute(path, Lora.AdapterOff(a), pairs, 258, 2, out bool hit1);
        var again = ReferenceLogps.LoadOrCompute(path, Lora.AdapterOff(a), pairs, 258, 2, out bool hit2);
        var other = ReferenceLogps.LoadOrCompute(path, Lora.AdapterOff(b), pairs, 258, 2, out bool hit3);
        Assert.False(hit1);
        Assert.True(hit2);
        Assert.Equal(first.Chosen, again.Chosen);
        Assert.False(hit3);                                                     // before the fix: read back base 1's log-probs
        Assert.NotEqual(first.Chosen, other.Chosen);
        var direct = ReferenceLogps.Compute(Lora.AdapterOff(b), pairs, 258, 2);
        Assert.Equal(direct.Chosen, other.Chosen);
    }
}
