using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Objectives;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

public class LoraTests
{
    internal static ModelConfig Config(string type = "llama") => ModelTests.Llama(type, kvHeads: 2, tied: type == "qwen2", attentionBias: type == "qwen2");

    internal static Tensor Ids(int seed = 7) => randint(3, 50, new long[] { 2, 10 }, generator: new TorchSharp.torch.Generator((ulong)seed));

    /// <summary>A LoRA model whose B matrices are random (fresh adapters are a no-op: B = 0).</summary>
    internal static CausalLM WithTrainedAdapter(ModelConfig config, LoraSettings? settings = null, int seed = 3)
    {
        var model = ModelFactory.Create(config, seed);
        Lora.Apply(model, settings ?? new LoraSettings { R = 4, Alpha = 8, Dropout = 0 }, seed: 11);
        using var _ = no_grad();
        var g = new TorchSharp.torch.Generator(99);
        foreach (var (name, p) in model.named_parameters())
            if (name.Contains(".lora_B.")) p.copy_(randn(p.shape, generator: g) * 0.05);
        model.eval();
        return model;
    }

    private static double MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Fact]
    public void Fresh_adapters_change_nothing_and_only_adapters_train()
    {
        var plain = ModelFactory.Create(Config(), 3);
        var model = ModelFactory.Create(Config(), 3);
        var state = Lora.Apply(model, new LoraSettings(), seed: 1);
        Assert.Equal(2 * 7, state.Modules.Count);
        using var _ = no_grad();
        var ids = Ids();
        Assert.Equal(0, MaxDiff(plain.Forward(ids), model.Forward(ids)));
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).ToList();
        Assert.Equal(2 * 7 * 2, trainable.Count);
        Assert.All(trainable, n => Assert.Matches(@"\.lora_[AB]\.weight$", n));
        // A ~ U(−1/√in, 1/√in) (kaiming-uniform a = √5), B = 0, as PEFT initialises.
        var (a, b) = Lora.Projections(model).First().Module.Adapter!.Value;
        Assert.True(a.abs().max().item<float>() <= 1 / Math.Sqrt(32) + 1e-6 && a.abs().max().item<float>() > 0.5 / Math.Sqrt(32));
        Assert.Equal(0f, b.abs().sum().item<float>());
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void Adapter_forward_equals_the_merged_model_and_the_reference_is_the_base(string type)
    {
        using var dir = TestPaths.NewTempDir();
        var config = Config(type);
        var model = WithTrainedAdapter(config, new LoraSettings { R = 4, Alpha = 8, Dropout = 0.1, BaseModelNameOrPath = Path.Combine(dir.Path, "base") });
        ModelIO.Save(ModelFactory.Create(config, 3), Path.Combine(dir.Path, "base"));
        ModelIO.Save(model, Path.Combine(dir.Path, "adapter"));
        Assert.True(File.Exists(Path.Combine(dir.Path, "adapter", Lora.ConfigFile)));
        Assert.False(File.Exists(Path.Combine(dir.Path, "adapter", "model.safetensors")));

        using var _ = no_grad();
        var ids = Ids();
        var withAdapter = model.Forward(ids);
        using var merged = ModelIO.Load(Path.Combine(dir.Path, "adapter"));     // an adapter folder reads as the merged model
        Assert.Null(merged.Lora);
        Assert.True(MaxDiff(withAdapter, merged.Forward(ids)) <= 1e-5, $"merged differs by {MaxDiff(withAdapter, merged.Forward(ids))}");
        var mask = ones(2, 10, ScalarType.Bool);
        var lpAdapter = CausalLmLoss.SequenceLogProbs(model, ids, null, mask);
        var lpMerged = CausalLmLoss.SequenceLogProbs(merged, ids, null, mask);
        Assert.True(MaxDiff(lpAdapter, lpMerged) <= 1e-4);

        var baseModel = ModelFactory.Create(config, 3);
        var reference = Lora.AdapterOff(model);
        Assert.Empty(reference.parameters());
        Assert.Equal(0, MaxDiff(baseModel.Forward(ids), reference.Forward(ids)));   // adapter off = original model, exactly
        Assert.True(MaxDiff(withAdapter, model.Forward(ids)) == 0);                 // and the switch comes back on
        reference.Dispose();
        Assert.True(MaxDiff(withAdapter, model.Forward(ids)) == 0);                 // disposing the view leaves the policy alone
    }

    [Fact]
    public void Adapter_files_use_peft_names_and_config_and_round_trip()
    {
        using var dir = TestPaths.NewTempDir();
        var model = WithTrainedAdapter(Config(), new LoraSettings { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"], BaseModelNameOrPath = "some/base" });
        ModelIO.Save(model, dir.Path);
        var names = SafeTensors.Load(Path.Combine(dir.Path, Lora.WeightsFile)).Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", names);
        Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", names);
        Assert.Equal(2 * 2 * 2, names.Count);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, Lora.ConfigFile)))!.AsObject();
        Assert.Equal("LORA", (string)cfg["peft_type"]!);
        Assert.Equal("CAUSAL_LM", (string)cfg["task_type"]!);
        Assert.Equal(4, (int)cfg["r"]!);
        Assert.Equal(8.0, (double)cfg["lora_alpha"]!);
        Assert.Equal("none", (string)cfg["bias"]!);
        Assert.False((bool)cfg["fan_in_fan_out"]!);
        Assert.Equal("some/base", (string)cfg["base_model_name_or_path"]!);
        Assert.Equal(["q_proj", "v_proj"], cfg["target_modules"]!.AsArray().Select(n => (string)n!).ToArray());

        var again = ModelFactory.Create(Config(), 3);
        Lora.Apply(again, new LoraSettings { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] }, seed: 5);
        ModelIO.LoadInto(again, dir.Path);
        var expected = model.state_dict();
        foreach (var (name, t) in again.state_dict()) Assert.Equal(0, MaxDiff(expected[name], t));
    }

    [Fact]
    public void A_peft_adapter_written_elsewhere_merges_as_W_plus_scaled_BA()
    {
        using var dir = TestPaths.NewTempDir();
        var config = Config();
        string basePath = Path.Combine(dir.Path, "base"), adapter = Path.Combine(dir.Path, "adapter");
        ModelIO.Save(ModelFactory.Create(config, 3), basePath);
        Directory.CreateDirectory(adapter);
        // As PEFT's save_pretrained writes them: rsLoRA scaling, string target_modules regex, extra fields we do not use.
        File.WriteAllText(Path.Combine(adapter, Lora.ConfigFile), new JsonObject
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = 2, ["lora_alpha"] = 6, ["lora_dropout"] = 0.0, ["use_rslora"] = true,
            ["target_modules"] = @"model\.layers\.1\.mlp\.(up|down)_proj", ["base_model_name_or_path"] = basePath, ["bias"] = "none",
            ["fan_in_fan_out"] = false, ["inference_mode"] = true, ["revision"] = null, ["megatron_core"] = "megatron.core", ["rank_pattern"] = new JsonObject(),
        }.ToJsonString());
        var g = new TorchSharp.torch.Generator(4);
        var a = randn(new long[] { 2, 32 }, generator: g);
        var b = randn(new long[] { 32, 2 }, generator: g);
        SafeTensors.Save(Path.Combine(adapter, Lora.WeightsFile), new Dictionary<string, Tensor>
        {
            ["base_model.model.model.layers.1.mlp.up_proj.lora_A.weight"] = randn(new long[] { 2, 32 }, generator: g),
            ["base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"] = randn(new long[] { 48, 2 }, generator: g),
            ["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"] = randn(new long[] { 2, 48 }, generator: g),
            ["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"] = b,
        });
        var downA = SafeTensors.Load(Path.Combine(adapter, Lora.WeightsFile))["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"];
        using var merged = ModelIO.Load(adapter);
        var baseW = ModelFactory.Create(config, 3).state_dict()["model.layers.1.mlp.down_proj.weight"];
        var expected = baseW + b.matmul(downA) * (6 / Math.Sqrt(2));
        Assert.True(MaxDiff(expected, merged.state_dict()["model.layers.1.mlp.down_proj.weight"]) <= 1e-5);
        Assert.Equal(0, MaxDiff(ModelFactory.Create(config, 3).state_dict()["model.layers.1.self_attn.q_proj.weight"], merged.state_dict()["model.layers.1.self_attn.q_proj.weight"]));
    }

    [Fact]
    public void All_linear_targets_every_projection_but_not_the_lm_head()
    {
        var model = ModelFactory.Create(Config(), 3);
        var state = Lora.Apply(model, new LoraSettings { TargetModules = [LoraSettings.AllLinear] }, seed: 1);
        Assert.Equal(14, state.Modules.Count);
        Assert.DoesNotContain(state.Modules, m => m.Contains("lm_head"));
        Assert.Equal(7, state.Settings.TargetModules.Count);
    }

    [Fact]
    public void Bad_settings_and_adapters_are_one_line_errors()
    {
        var model = ModelFactory.Create(Config(), 3);
        var e = Assert.Throws<FineAlignException>(() => Lora.Apply(model, new LoraSettings { TargetModules = ["q_proj", "query_key_value"] }, 1));
        Assert.Contains("'query_key_value' names no module", e.Message);
        Assert.Contains("q_proj", e.Message);
        e = Assert.Throws<FineAlignException>(() => Lora.Apply(model, new LoraSettings { R = 0 }, 1));
        Assert.Contains("lora_r = 0", e.Message);
        Assert.Null(model.Lora);

        // An adapter trained on a base of another shape (intermediate 64 instead of 48).
        using var dir = TestPaths.NewTempDir();
        var other = ModelTests.Llama(kvHeads: 2, extra: o => o["intermediate_size"] = 64);
        var wide = ModelFactory.Create(other, 3);
        Lora.Apply(wide, new LoraSettings { R = 2 }, 1);
        ModelIO.Save(wide, dir.Path);
        e = Assert.Throws<FineAlignException>(() => Lora.MergeInto(ModelFactory.Create(Config(), 3), dir.Path));
        Assert.Contains("gate_proj.lora_B.weight' has shape [64, 2] but the base model implies [48, 2]", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}

public class RealShapePresetTests
{
    [Theory]
    [InlineData("smollm2-135m", "llama", 576, 30, 9, 3, 1536, 49152, false)]
    [InlineData("qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 4864, 151936, true)]
    public void Real_shape_presets_have_the_published_shapes(string name, string type, int dim, int layers, int heads, int kv, int mlp, int vocab, bool bias)
    {
        // No weights are allocated here (the bench builds them); the shapes are those of the published config.json files.
        var c = ModelPresets.Create(name, new FineAlign.Text.ByteTokenizer(), 512);
        Assert.Equal((type, dim, layers, heads, kv, mlp, vocab, bias, 64, true),
                     (c.ModelType, c.HiddenSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.IntermediateSize, c.VocabSize, c.AttentionBias, c.HeadDim, c.TieWordEmbeddings));
        Assert.Contains(name, ModelPresets.Names);
    }
}

public class ScoredLoraTests
{
    [Fact]
    public void A_reward_model_with_lora_saves_merged_and_resumes_adapter_and_head()
    {
        using var dir = TestPaths.NewTempDir();
        var trunk = LoraTests.WithTrainedAdapter(LoraTests.Config());
        var rm = new ScoredLM(trunk, HeadKind.Sequence, 1, seed: 2);
        rm.eval();
        var ids = LoraTests.Ids();
        using var _ = no_grad();
        var scores = rm.SequenceScores(ids);
        rm.Save(dir.Path);
        using var loaded = ScoredLM.Load(dir.Path);                     // a plain classification folder (merged trunk)
        Assert.True((loaded.SequenceScores(ids) - scores).abs().max().item<float>() <= 1e-5);
        Assert.True(Lora.IsAdapterFolder(Path.Combine(dir.Path, ScoredLM.AdapterFolder)));

        var fresh = ModelFactory.Create(LoraTests.Config(), 3);
        Lora.Apply(fresh, new LoraSettings { R = 4, Alpha = 8, Dropout = 0 }, seed: 11);
        var resumed = new ScoredLM(fresh, HeadKind.Sequence, 1, seed: 99);
        resumed.LoadWeights(dir.Path);                                  // adapter + head; the base stays the frozen original
        resumed.eval();
        Assert.Equal(0f, (resumed.SequenceScores(ids) - scores).abs().max().item<float>());
    }
}
