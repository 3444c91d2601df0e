using FineAlign.Cli;
using FineAlign.Models;
using System.Text.Json.Nodes;

namespace FineAlign.LlamaCpp.Tests;

/// <summary><c>finealign export-gguf</c> end to end, in-process: the file it writes loads in llama.cpp; bad input is one line and exit 1.</summary>
[Collection("gguf")]
public class ExportGgufCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter { NewLine = "\n" };
        var e = new StringWriter { NewLine = "\n" };
        int code = CliApp.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void Exports_a_model_folder_that_llama_cpp_loads()
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create("qwen2", 4, 2, tied: true);
        string dir = TinyModels.Save(model, tmp.Path, "m");
        string outFile = tmp.File("out/m.gguf");
        var (code, stdout, stderr) = Run("export-gguf", "--model", dir, "--out", outFile, "--type", "f16");
        Assert.True(code == 0, stderr);
        Assert.Contains("GGUF 'qwen2'", stdout);
        Assert.Contains("gpt2/gpt-2", stdout);
        var f = GgufFile.Read(outFile);
        Assert.Equal(1u, f.Get<uint>("general.file_type"));
        using var engine = new LlamaCppEngine(outFile);
        Assert.Equal(261, engine.VocabCount);
        Assert.Equal(24, engine.LogProbs(TinyModels.RandomIds(24, 261, 1)).Length);
    }

    [Fact]
    public void Adapter_is_merged_before_the_export_and_llama_cpp_runs_the_merged_model()
    {
        using var tmp = new TempDir();
        using var model = TinyModels.Create("llama", 4, 2, tied: false);
        string baseDir = TinyModels.Save(model, tmp.Path, "base");
        // A LoRA adapter with a non-zero B (PEFT initialises B to 0, which would make the merge a no-op and the test blind).
        using (var tuned = ModelIO.Load(baseDir))
        {
            Lora.Apply(tuned, new LoraSettings { R = 4, Alpha = 8 }, seed: 3);
            using (TorchSharp.torch.no_grad())
                foreach (var (_, proj) in Lora.Projections(tuned))
                    if (proj.Adapter is var (_, b)) b.copy_(TorchSharp.torch.randn(b.shape, generator: new TorchSharp.torch.Generator(7)) * 0.05);
            Directory.CreateDirectory(Path.Combine(tmp.Path, "adapter"));
            Lora.WriteAdapter(tuned, Path.Combine(tmp.Path, "adapter"));
        }
        string adapterDir = Path.Combine(tmp.Path, "adapter");
        string outFile = tmp.File("merged.gguf");
        var (code, stdout, stderr) = Run("export-gguf", "--model", baseDir, "--adapter", adapterDir, "--out", outFile);
        Assert.True(code == 0, stderr);
        Assert.Contains("merged adapter", stdout);

        var ids = TinyModels.RandomIds(24, 261, 5);
        using var merged = ModelIO.LoadMerged(baseDir, adapterDir);
        var expected = TinyModels.LogProbs(merged, ids).Target;
        var plain = TinyModels.LogProbs(model, ids).Target;
        using var engine = new LlamaCppEngine(outFile);
        var rows = engine.LogProbs(ids);
        var got = Enumerable.Range(0, ids.Length - 1).Select(t => rows[t][ids[t + 1]]).ToArray();
        double err = expected.Zip(got).Max(p => Math.Abs(p.First - p.Second));
        double adapterEffect = expected.Zip(plain).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(err <= 1e-4, $"llama.cpp vs merged FineAlign: max |Δ log p| = {err}");
        Assert.True(adapterEffect > 1e-3, $"the adapter barely changes the model ({adapterEffect}): the test could not see a missing merge");

        var (bad, _, badErr) = Run("export-gguf", "--model", baseDir, "--adapter", baseDir, "--out", tmp.File("x.gguf"));
        Assert.Equal(1, bad);
        Assert.Contains("not a PEFT adapter folder", badErr);
    }

    [Fact]
    public void Refuses_gpt2_a_bad_type_and_a_folder_as_out_with_one_line()
    {
        using var tmp = new TempDir();
        using var gpt2 = ModelFactory.Create(ModelConfig.FromJson(new JsonObject
        {
            ["model_type"] = "gpt2", ["vocab_size"] = 261, ["n_embd"] = 32, ["n_layer"] = 1, ["n_head"] = 2, ["n_positions"] = 32,
        }), 0);
        string gdir = TinyModels.Save(gpt2, tmp.Path, "g");
        var r = Run("export-gguf", "--model", gdir, "--out", tmp.File("g.gguf"));
        Assert.Equal(1, r.Code);
        Assert.Contains("model_type 'gpt2' cannot be exported to GGUF", r.Err);
        Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(File.Exists(tmp.File("g.gguf")));

        r = Run("export-gguf", "--model", gdir, "--out", tmp.File("g.gguf"), "--type", "q4_0");
        Assert.NotEqual(0, r.Code);
        Assert.Contains("--type", r.Err);

        r = Run("export-gguf", "--model", gdir, "--out", tmp.Path);
        Assert.Equal(1, r.Code);
        Assert.Contains("is a folder", r.Err);
    }
}
