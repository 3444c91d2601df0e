using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.LlamaCpp.Tests;

/// <summary>Tiny random models made in the test, saved as Hugging Face folders with FineAlign's byte tokenizer.</summary>
public static class TinyModels
{
    /// <summary>
    /// A random model of <paramref name="type"/>. Weights are drawn with std 0.2 (not HF's 0.02) so the logits are
    /// peaked enough for greedy decoding to have clear winners; norm gains and biases are random too, so a
    /// misplaced norm or bias shows up in the log-probs.
    /// </summary>
    public static CausalLM Create(string type, int heads, int kvHeads, bool tied, int vocab = 261, int hidden = 64, int layers = 2, long seed = 1,
                                  JsonObject? extra = null)
    {
        var json = new JsonObject
        {
            ["model_type"] = type, ["vocab_size"] = vocab, ["hidden_size"] = hidden, ["intermediate_size"] = 2 * hidden,
            ["num_hidden_layers"] = layers, ["num_attention_heads"] = heads, ["num_key_value_heads"] = kvHeads,
            ["max_position_embeddings"] = 128, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 10000.0, ["tie_word_embeddings"] = tied,
            ["initializer_range"] = 0.2, ["bos_token_id"] = 256, ["eos_token_id"] = 257, ["hidden_act"] = "silu",
        };
        if (extra is not null) foreach (var (k, v) in extra) json[k] = v?.DeepClone();
        var config = ModelConfig.FromJson(json, "test config");
        var model = ModelFactory.Create(config, seed);
        using (no_grad())
        using (var gen = new Generator((ulong)seed + 100))
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.EndsWith("norm.weight", StringComparison.Ordinal))
                    p.copy_(empty(p.shape).uniform_(0.5, 1.5, gen));
                else if (name.EndsWith(".bias", StringComparison.Ordinal))
                    p.copy_(empty(p.shape).normal_(0, 0.5, gen));
            }
        model.eval();
        return model;
    }

    /// <summary>Saves <paramref name="model"/> with the byte tokenizer into a fresh folder under <paramref name="root"/>.</summary>
    public static string Save(CausalLM model, string root, string name)
    {
        string dir = Path.Combine(root, name);
        ModelIO.Save(model, dir, new ByteTokenizer());
        return dir;
    }

    /// <summary>FineAlign's per-token log-probs: [t] = log p(ids[t+1] | ids[..t]), and the full log-softmax rows.</summary>
    public static (double[] Target, float[][] All) LogProbs(CausalLM model, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = tensor(ids.Select(i => (long)i).ToArray(), ScalarType.Int64).unsqueeze(0);
        var logp = nn.functional.log_softmax(model.Forward(input)[0].to(ScalarType.Float64), -1);
        var all = Enumerable.Range(0, ids.Length).Select(t => logp[t].to(ScalarType.Float32).data<float>().ToArray()).ToArray();
        var target = Enumerable.Range(0, ids.Length - 1).Select(t => logp[t, ids[t + 1]].item<double>()).ToArray();
        return (target, all);
    }

    public static int[] RandomIds(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }
}
