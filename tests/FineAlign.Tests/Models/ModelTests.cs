using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

public class ModelTests
{
    internal static ModelConfig Llama(string type = "llama", int heads = 4, int kvHeads = 4, int? headDim = null, bool tied = false,
        bool attentionBias = false, bool mlpBias = false, double theta = 10_000, Action<JsonObject>? extra = null)
    {
        var o = new JsonObject
        {
            ["model_type"] = type, ["vocab_size"] = 50, ["hidden_size"] = 32, ["intermediate_size"] = 48,
            ["num_hidden_layers"] = 2, ["num_attention_heads"] = heads, ["num_key_value_heads"] = kvHeads,
            ["max_position_embeddings"] = 64, ["rms_norm_eps"] = 1e-6, ["rope_theta"] = theta,
            ["tie_word_embeddings"] = tied, ["attention_bias"] = attentionBias, ["mlp_bias"] = mlpBias,
            ["bos_token_id"] = 1, ["eos_token_id"] = 2,
        };
        if (headDim is int hd) o["head_dim"] = hd;
        extra?.Invoke(o);
        return Parse(o);
    }

    // Through text, as config.json is read (ModelConfig's integer reader expects parsed JSON numbers).
    private static ModelConfig Parse(JsonObject o) => ModelConfig.FromJson((JsonObject)JsonNode.Parse(o.ToJsonString())!);

    internal static ModelConfig Gpt2(bool tied = true) => Parse(new JsonObject
    {
        ["model_type"] = "gpt2", ["vocab_size"] = 50, ["n_embd"] = 32, ["n_layer"] = 2, ["n_head"] = 4,
        ["n_positions"] = 32, ["tie_word_embeddings"] = tied,
    });

    private static Tensor Ids(int batch, int length, int seed)
    {
        var g = new torch.Generator((ulong)seed);
        return randint(3, 50, new long[] { batch, length }, generator: g);
    }

    private static void AssertClose(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float32) - actual.to(ScalarType.Float32)).abs().max().item<float>();
        Assert.True(diff <= tol, $"{what}: max |diff| = {diff} > {tol}");
    }

    public static IEnumerable<object[]> Configs() => new[]
    {
        new object[] { "llama-mha" }, new object[] { "llama-gqa" }, new object[] { "qwen2-bias" }, new object[] { "mistral-tied" },
        new object[] { "llama-headdim" }, new object[] { "llama-allbias" }, new object[] { "gpt2" }, new object[] { "gpt2-untied" },
    };

    internal static ModelConfig ByName(string name) => name switch
    {
        "llama-mha" => Llama(),
        "llama-gqa" => Llama(kvHeads: 2),
        "qwen2-bias" => Llama("qwen2", kvHeads: 1, tied: true, theta: 1_000_000),
        "mistral-tied" => Llama("mistral", kvHeads: 2, tied: true),
        "llama-headdim" => Llama(heads: 4, kvHeads: 2, headDim: 16),
        "llama-allbias" => Llama(attentionBias: true, mlpBias: true),
        "mistral-window3" => Llama("mistral", kvHeads: 2, extra: o => o["sliding_window"] = 3),
        "gpt2" => Gpt2(),
        "gpt2-untied" => Gpt2(tied: false),
        _ => throw new ArgumentException(name),
    };

    [Fact]
    public void ParameterNamesAndShapesAreHuggingFaces()
    {
        using var llama = ModelFactory.Create(Llama("qwen2", kvHeads: 2, headDim: 16), 1);
        var p = llama.named_parameters().ToDictionary(x => x.name, x => x.parameter.shape);
        Assert.Equal(new long[] { 50, 32 }, p["model.embed_tokens.weight"]);
        Assert.Equal(new long[] { 64, 32 }, p["model.layers.1.self_attn.q_proj.weight"]);   // 4 heads × head_dim 16
        Assert.Equal(new long[] { 32 }, p["model.layers.1.self_attn.k_proj.bias"]);          // 2 kv heads × 16
        Assert.Equal(new long[] { 32, 64 }, p["model.layers.0.self_attn.o_proj.weight"]);
        Assert.False(p.ContainsKey("model.layers.0.self_attn.o_proj.bias"));                 // Qwen2: no o_proj bias
        Assert.Equal(new long[] { 48, 32 }, p["model.layers.0.mlp.gate_proj.weight"]);
        Assert.Equal(new long[] { 32, 48 }, p["model.layers.0.mlp.down_proj.weight"]);
        Assert.Contains("model.layers.0.input_layernorm.weight", p.Keys);
        Assert.Contains("model.layers.0.post_attention_layernorm.weight", p.Keys);
        Assert.Contains("model.norm.weight", p.Keys);
        Assert.Equal(new long[] { 50, 32 }, p["lm_head.weight"]);                            // untied config
    }

    [Fact]
    public void TiedModelsHaveNoLmHeadParameterAndUseEmbeddings()
    {
        using var tied = ModelFactory.Create(Llama(tied: true), 1);
        Assert.DoesNotContain(tied.named_parameters(), x => x.name == "lm_head.weight");
        using var untied = ModelFactory.Create(Llama(tied: false), 1);
        Assert.Contains(untied.named_parameters(), x => x.name == "lm_head.weight");

        using var g = ModelFactory.Create(Gpt2(), 1);
        var names = g.named_parameters().Select(x => x.name).ToHashSet();
        foreach (var n in new[] { "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                     "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_attn.bias", "transformer.h.1.attn.c_proj.weight",
                     "transformer.h.0.ln_2.bias", "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.bias", "transformer.ln_f.weight" })
            Assert.Contains(n, names);
        Assert.DoesNotContain("lm_head.weight", names);
        Assert.Equal(new long[] { 32, 96 }, g.named_parameters().First(x => x.name == "transformer.h.0.attn.c_attn.weight").parameter.shape);

        // Tied head: logits are hidden · wteᵀ.
        using var _ = inference_mode();
        using var ids = Ids(1, 5, 3);
        using var h = tied.ForwardHidden(ids);
        using var logits = tied.LmHead(h);
        var emb = tied.named_parameters().First(x => x.name == "model.embed_tokens.weight").parameter;
        AssertClose(h.matmul(emb.t()), logits, 1e-5, "tied head");
    }

    [Fact]
    public void FactoryIsDeterministicPerSeed()
    {
        using var a = ModelFactory.Create(Llama(), 5);
        using var b = ModelFactory.Create(Llama(), 5);
        using var c = ModelFactory.Create(Llama(), 6);
        var pa = a.named_parameters().First(x => x.name == "model.layers.0.self_attn.q_proj.weight").parameter;
        var pb = b.named_parameters().First(x => x.name == "model.layers.0.self_attn.q_proj.weight").parameter;
        var pc = c.named_parameters().First(x => x.name == "model.layers.0.self_attn.q_proj.weight").parameter;
        Assert.True(pa.equal(pb).all().item<bool>());
        Assert.False(pa.equal(pc).all().item<bool>());
        Assert.Equal(0.02, pa.std().item<float>(), 0.003);
        var norm = a.named_parameters().First(x => x.name == "model.norm.weight").parameter;
        Assert.True(norm.eq(1).all().item<bool>());
    }

    [Theory]
    [MemberData(nameof(Configs))]
    public void SaveThenLoadGivesIdenticalLogits(string name)
    {
        using var tmp = TestPaths.NewTempDir();
        var cfg = ByName(name);
        using var model = ModelFactory.Create(cfg, 11);
        string dir = Path.Combine(tmp.Path, "m");
        ModelIO.Save(model, dir);
        using var loaded = ModelIO.Load(dir);
        Assert.Equal(cfg.ModelType, loaded.Config.ModelType);
        Assert.Equal(cfg.NumKvHeads, loaded.Config.NumKvHeads);
        Assert.Equal(cfg.HeadDim, loaded.Config.HeadDim);
        Assert.Equal(cfg.TieWordEmbeddings, loaded.Config.TieWordEmbeddings);
        using var st = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        Assert.Equal(!cfg.TieWordEmbeddings, st.Contains("lm_head.weight"));
        Assert.True(File.Exists(Path.Combine(dir, "generation_config.json")) || cfg.IsGpt2);

        using var _ = inference_mode();
        using var ids = Ids(2, 7, 4);
        using var a = model.Forward(ids);
        using var b = loaded.Forward(ids);
        Assert.True(a.equal(b).all().item<bool>(), name);
    }

    [Theory]
    [InlineData(ScalarType.BFloat16, "bfloat16", "BF16", 0.05)]
    [InlineData(ScalarType.Float16, "float16", "F16", 0.01)]
    public void HalfPrecisionWeightsSaveAndLoad(ScalarType dtype, string configName, string fileDtype, double tol)
    {
        using var tmp = TestPaths.NewTempDir();
        using var model = ModelFactory.Create(Llama(kvHeads: 2), 3, dtype);
        string dir = Path.Combine(tmp.Path, "half");
        ModelIO.Save(model, dir);
        Assert.Contains($"\"torch_dtype\": \"{configName}\"", File.ReadAllText(Path.Combine(dir, "config.json")));
        using (var st = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            Assert.All(st.Entries.Values, e => Assert.Equal(fileDtype, e.DType));

        using var asHalf = ModelIO.Load(dir, dtype);
        using var asFloat = ModelIO.Load(dir);                      // upcast to fp32 on load
        Assert.Equal(ScalarType.Float32, asFloat.parameters().First().dtype);
        using var _ = inference_mode();
        using var ids = Ids(1, 6, 9);
        using var a = model.Forward(ids);
        using var b = asHalf.Forward(ids);
        Assert.Equal(dtype, b.dtype);
        Assert.True(a.equal(b).all().item<bool>());
        using var c = asFloat.Forward(ids);
        AssertClose(a, c, tol, "fp32 compute of half weights");
    }

    [Fact]
    public void GroupedQueryAttentionEqualsMultiHeadWithRepeatedKeyValueWeights()
    {
        using var gqa = ModelFactory.Create(Llama(heads: 4, kvHeads: 2), 21);
        using var mha = ModelFactory.Create(Llama(heads: 4, kvHeads: 4), 99);
        var src = gqa.named_parameters().ToDictionary(x => x.name, x => x.parameter);
        using (no_grad())
        {
            foreach (var (name, p) in mha.named_parameters())
            {
                var s = src[name];
                if (name.EndsWith("k_proj.weight") || name.EndsWith("v_proj.weight"))
                {
                    // [kv·D, hidden] → each kv head's D rows repeated for the 2 query heads sharing it.
                    using var rep = s.view(2, 8, 32).repeat_interleave(2, 0).reshape(32, 32);
                    p.copy_(rep);
                }
                else p.copy_(s);
            }
        }
        using var _ = inference_mode();
        using var ids = Ids(2, 9, 5);
        using var a = gqa.Forward(ids);
        using var b = mha.Forward(ids);
        AssertClose(a, b, 1e-5, "GQA vs repeated MHA");
        // and the GQA model is not trivially equal to the freshly initialised MHA one
        using var fresh = ModelFactory.Create(Llama(heads: 4, kvHeads: 4), 99);
        using var c = fresh.Forward(ids);
        Assert.True((a - c).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void RotaryUsesRotateHalfLayoutAndRopeTheta()
    {
        // Hand-worked: head_dim 4, position 1, theta 100 → inv_freq = [1, 1/10];
        // x = [1, 0, 0, 0] rotates to [cos 1, 0, sin 1, 0] (half layout pairs index 0 with index 2).
        using var x = tensor(new float[] { 1, 0, 0, 0 }).view(1, 1, 1, 4);
        using var pos = tensor(new long[] { 1 }).view(1, 1);
        var (cos, sin) = Rotary.Tables(pos, 4, 100);
        using var y = Rotary.Apply(x, cos, sin);
        float[] v = y.data<float>().ToArray();
        Assert.Equal(Math.Cos(1), v[0], 1e-6);
        Assert.Equal(0, v[1], 1e-6);
        Assert.Equal(Math.Sin(1), v[2], 1e-6);
        Assert.Equal(0, v[3], 1e-6);
        using var x2 = tensor(new float[] { 0, 1, 0, 0 }).view(1, 1, 1, 4);
        using var y2 = Rotary.Apply(x2, cos, sin);
        float[] w = y2.data<float>().ToArray();
        Assert.Equal(Math.Cos(0.1), w[1], 1e-6);
        Assert.Equal(Math.Sin(0.1), w[3], 1e-6);
        cos.Dispose(); sin.Dispose();
    }

    [Fact]
    public void RopeScalingLinearAndLlama3FollowTransformers()
    {
        // head_dim 8, θ = 10⁴ → inv_freq = [1, 0.1, 0.01, 0.001]; wavelengths 2π/f = [6.3, 62.8, 628, 6283].
        float[] inv = Rotary.InverseFrequencies(8, 10_000);
        Assert.Equal(new[] { 1f, 0.1f, 0.01f, 0.001f }, inv.Select(f => (float)Math.Round(f, 6)).ToArray());

        var linear = Rotary.Scaled(inv, JsonNode.Parse("""{"type":"linear","factor":4}"""));
        Assert.Equal(0.025f, linear[1], 1e-7f);

        // llama3 with original length 64, low 1, high 4, factor 8: wavelength < 16 kept, > 64 divided by 8,
        // between them blended with s = (64/λ − 1)/(4 − 1).
        var l3 = Rotary.Scaled(inv, JsonNode.Parse("""{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":64}"""));
        double s1 = (64 / (2 * Math.PI / 0.1) - 1) / 3;
        Assert.Equal(1f, l3[0]);
        Assert.Equal((1 - s1) * 0.1 / 8 + s1 * 0.1, l3[1], 1e-6);
        Assert.Equal(0.01 / 8, l3[2], 1e-7);
        Assert.Equal(0.001 / 8, l3[3], 1e-8);

        var e = Assert.Throws<FineAlignException>(() => Rotary.Scaled(inv, JsonNode.Parse("""{"rope_type":"yarn","factor":4}""")));
        Assert.Contains("yarn", e.Message);
        Assert.Throws<FineAlignException>(() => ModelFactory.Create(Llama(extra: o => o["rope_scaling"] = JsonNode.Parse("""{"rope_type":"dynamic","factor":2}""")), 1));
    }

    [Fact]
    public void MistralSlidingWindowLimitsWhatEachTokenSees()
    {
        // Window 3, 2 layers: the last token's receptive field is 2·(3 − 1) + 1 = 5 tokens. RoPE scores
        // depend only on relative positions, so the 5-token suffix alone gives the same last logits.
        using var windowed = ModelFactory.Create(ByName("mistral-window3"), 4);
        using var plain = ModelFactory.Create(Llama("mistral", kvHeads: 2), 4);
        using var _ = inference_mode();
        using var ids = Ids(1, 9, 8);
        using var suffix = ids.narrow(1, 4, 5);
        using var full = windowed.Forward(ids);
        using var part = windowed.Forward(suffix);
        AssertClose(full.narrow(1, 8, 1), part.narrow(1, 4, 1), 1e-5, "window 3");
        using var fullPlain = plain.Forward(ids);
        using var partPlain = plain.Forward(suffix);
        Assert.True((fullPlain.narrow(1, 8, 1) - partPlain.narrow(1, 4, 1)).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void RmsNormMatchesHandComputation()
    {
        // x = [3, 4]: mean(x²) = 12.5, so x / √12.5 = [0.848528, 1.131371].
        using var norm = new RMSNorm(2, 0.0);
        using var x = tensor(new float[] { 3, 4 }).view(1, 2);
        using var y = norm.forward(x);
        Assert.Equal(3 / Math.Sqrt(12.5), y[0, 0].item<float>(), 1e-6);
        Assert.Equal(4 / Math.Sqrt(12.5), y[0, 1].item<float>(), 1e-6);
    }

    [Fact]
    public void UnknownModelTypeNamesTheSupportedOnes()
    {
        using var tmp = TestPaths.NewTempDir();
        File.WriteAllText(Path.Combine(tmp.Path, "config.json"), """{"model_type":"falcon","vocab_size":10}""");
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Load(tmp.Path));
        Assert.Contains("falcon", e.Message);
        foreach (var t in ModelConfig.SupportedTypes) Assert.Contains(t, e.Message);
    }

    [Fact]
    public void MissingOrMisshapenTensorIsNamed()
    {
        using var tmp = TestPaths.NewTempDir();
        using var model = ModelFactory.Create(Llama(), 1);
        string dir = Path.Combine(tmp.Path, "m");
        ModelIO.Save(model, dir);
        string file = Path.Combine(dir, "model.safetensors");

        var state = SafeTensors.Load(file);
        state.Remove("model.layers.1.mlp.up_proj.weight", out var removed);
        SafeTensors.Save(file, state);
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Load(dir));
        Assert.Contains("'model.layers.1.mlp.up_proj.weight'", e.Message);
        Assert.Contains("missing", e.Message);

        state["model.layers.1.mlp.up_proj.weight"] = zeros(48, 31);
        SafeTensors.Save(file, state);
        e = Assert.Throws<FineAlignException>(() => ModelIO.Load(dir));
        Assert.Contains("[48, 31]", e.Message);
        Assert.Contains("[48, 32]", e.Message);

        state["model.layers.1.mlp.up_proj.weight"] = removed!;
        state["value_head.weight"] = zeros(1, 32);
        SafeTensors.Save(file, state);
        e = Assert.Throws<FineAlignException>(() => ModelIO.Load(dir));
        Assert.Contains("unexpected tensor 'value_head.weight'", e.Message);

        // Known buffers (old checkpoints' rotary inv_freq) are ignored.
        state.Remove("value_head.weight");
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = zeros(4);
        SafeTensors.Save(file, state);
        using var ok = ModelIO.Load(dir);
        foreach (var t in state.Values) t.Dispose();
    }

    [Fact]
    public void Gpt2LoaderAcceptsKeysWithoutTransformerPrefixAndIgnoresAttentionBuffers()
    {
        using var tmp = TestPaths.NewTempDir();
        using var model = ModelFactory.Create(Gpt2(), 2);
        string dir = Path.Combine(tmp.Path, "openai-gpt2");
        ModelIO.Save(model, dir);
        string file = Path.Combine(dir, "model.safetensors");
        var state = SafeTensors.Load(file);
        var renamed = state.ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value);
        renamed["h.0.attn.bias"] = ones(1, 1, 32, 32).tril();
        renamed["h.0.attn.masked_bias"] = tensor(-1e4f);
        SafeTensors.Save(file, renamed);

        using var loaded = ModelIO.Load(dir);
        using var _ = inference_mode();
        using var ids = Ids(1, 8, 1);
        using var a = model.Forward(ids);
        using var b = loaded.Forward(ids);
        Assert.True(a.equal(b).all().item<bool>());
        foreach (var t in renamed.Values) t.Dispose();
    }

    [Fact]
    public void SaveCopiesTokenizerFilesAndNeverReplacesAForeignFolder()
    {
        using var tmp = TestPaths.NewTempDir();
        string tok = Path.Combine(tmp.Path, "tok");
        Directory.CreateDirectory(tok);
        File.WriteAllText(Path.Combine(tok, "tokenizer.json"), "{}");
        File.WriteAllText(Path.Combine(tok, "merges.txt"), "#version");
        File.WriteAllText(Path.Combine(tok, "secret.txt"), "not a tokenizer file");
        using var model = ModelFactory.Create(Gpt2(), 2);
        string dir = Path.Combine(tmp.Path, "out");
        ModelIO.Save(model, dir, tok);
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(dir, "merges.txt")));
        Assert.False(File.Exists(Path.Combine(dir, "secret.txt")));
        // Saving again over a model folder replaces it; no temp folders remain beside it.
        ModelIO.Save(model, dir);
        Assert.False(File.Exists(Path.Combine(dir, "tokenizer.json")));
        Assert.Equal(new[] { "out", "tok" }, Directory.GetDirectories(tmp.Path).Select(Path.GetFileName).Order());

        string foreign = Path.Combine(tmp.Path, "tok");
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Save(model, foreign));
        Assert.Contains("refusing", e.Message);
        Assert.True(File.Exists(Path.Combine(foreign, "secret.txt")));
    }

    [Fact]
    public void SavingOverTheFolderAModelCameFromKeepsItsTokenizerAndGenerationConfig()
    {
        using var tmp = TestPaths.NewTempDir();
        using var model = ModelFactory.Create(Llama(), 3);
        string dir = Path.Combine(tmp.Path, "m");
        ModelIO.Save(model, dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{\"version\":\"1.0\"}");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), "{\"temperature\":0.7}");
        ModelIO.Save(model, dir, tokenizerSourceFolder: dir);
        Assert.Equal("{\"version\":\"1.0\"}", File.ReadAllText(Path.Combine(dir, "tokenizer.json")));
        Assert.Contains("0.7", File.ReadAllText(Path.Combine(dir, "generation_config.json")));
        using var loaded = ModelIO.Load(dir);
        Assert.Equal(new[] { 2 }, loaded.Config.EosTokenIds);
    }

    [Fact]
    public void ShardedSaveLoadsBack()
    {
        using var tmp = TestPaths.NewTempDir();
        using var model = ModelFactory.Create(Llama(kvHeads: 2), 8);
        string dir = Path.Combine(tmp.Path, "sharded");
        ModelIO.Save(model, dir, maxShardBytes: 20_000);
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(dir, SafeTensors.IndexFileName)));
        Assert.True(Directory.GetFiles(dir, "model-*-of-*.safetensors").Length > 2);
        using var loaded = ModelIO.Load(dir);
        // Saved again unsharded: the index is gone, so the single file is what loads.
        ModelIO.Save(loaded, dir);
        Assert.False(File.Exists(Path.Combine(dir, SafeTensors.IndexFileName)));
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors")));
        using var _ = inference_mode();
        using var ids = Ids(1, 5, 2);
        using var a = model.Forward(ids);
        using var b = loaded.Forward(ids);
        Assert.True(a.equal(b).all().item<bool>());
    }
}
