using FineAlign.Cli.Commands;
using FineAlign.Models;
using FineAlign.Tests.Support;
using FineAlign.Text;
using static FineAlign.Tests.Cli.CommandFixtures;

namespace FineAlign.Tests.Cli;

public class ConvertCommandTests
{
    private static readonly int[] Ids = [1, 17, 250, 3, 99, 42, 7, 280, 5, 64];

    [Fact]
    public void Bf16_round_trip_keeps_logits_within_bf16_tolerance()
    {
        using var tmp = TestPaths.NewTempDir();
        string src = TestPaths.RequireShared("fixtures/llama-tiny");
        string bf16 = Path.Combine(tmp.Path, "bf16"), back = Path.Combine(tmp.Path, "back");
        var r = CliRunner.Run("convert", "-m", src, "-o", bf16, "--dtype", "bfloat16");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("as bfloat16 in 1 safetensors file", r.Out);
        using (var f = SafeTensorsFile.Open(Path.Combine(bf16, "model.safetensors")))
            Assert.All(f.Entries.Values, e => Assert.Equal("BF16", e.DType));
        Assert.Equal("bfloat16", ModelConfig.Load(Path.Combine(bf16, "config.json")).TorchDtype);
        Assert.True(new FileInfo(Path.Combine(bf16, "model.safetensors")).Length < new FileInfo(Path.Combine(src, "model.safetensors")).Length * 0.55);

        // auto = keep the source's torch_dtype (bfloat16), then back to float32.
        Assert.Equal(0, CliRunner.Run("convert", "-m", bf16, "-o", Path.Combine(tmp.Path, "auto")).Code);
        using (var f = SafeTensorsFile.Open(Path.Combine(tmp.Path, "auto", "model.safetensors")))
            Assert.All(f.Entries.Values, e => Assert.Equal("BF16", e.DType));
        Assert.Equal(0, CliRunner.Run("convert", "-m", bf16, "-o", back, "--dtype", "float32").Code);

        float[] a = Logits(src, Ids), b = Logits(back, Ids);
        double maxDiff = a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
        Assert.True(maxDiff < 0.1, $"max |Δlogit| {maxDiff}");   // bf16 keeps 8 mantissa bits: ~0.4% per weight
        Assert.True(maxDiff > 0, "bf16 rounding should change something");
    }

    [Fact]
    public void Sharded_output_loads_to_identical_logits()
    {
        using var tmp = TestPaths.NewTempDir();
        string src = TestPaths.RequireShared("fixtures/gpt2-tiny");
        string one = Path.Combine(tmp.Path, "one"), sharded = Path.Combine(tmp.Path, "sharded");
        Assert.Equal(0, CliRunner.Run("convert", "-m", src, "-o", one).Code);
        var r = CliRunner.Run("convert", "-m", src, "-o", sharded, "--max-shard-size", "40KB");
        Assert.True(r.Code == 0, r.Err);
        var shards = Directory.GetFiles(sharded, "*.safetensors");
        Assert.True(shards.Length > 1, $"{shards.Length} shard(s)");
        Assert.All(shards, s => Assert.True(new FileInfo(s).Length < 40_000 + 20_000));   // a shard exceeds the limit only by one tensor
        Assert.True(File.Exists(Path.Combine(sharded, SafeTensors.IndexFileName)));
        Assert.False(File.Exists(Path.Combine(sharded, SafeTensors.SingleFileName)));
        Assert.Equal(Logits(one, Ids), Logits(sharded, Ids));
        Assert.Equal(Logits(src, Ids), Logits(one, Ids));
    }

    [Fact]
    public void Tokenizer_files_are_copied_and_checkpoint_model_subfolder_is_accepted()
    {
        using var tmp = TestPaths.NewTempDir();
        string ckpt = Path.Combine(tmp.Path, "run", "checkpoint-10");
        SaveByteModel(Path.Combine(ckpt, "model"));
        File.WriteAllText(Path.Combine(ckpt, "trainer_state.json"), "{}");
        string outDir = Path.Combine(tmp.Path, "out");
        var r = CliRunner.Run("convert", "-m", ckpt, "-o", outDir, "--dtype", "fp16");
        Assert.True(r.Code == 0, r.Err);
        Assert.True(TokenizerLoader.Load(outDir) is ByteTokenizer);
        Assert.True(File.Exists(Path.Combine(outDir, "generation_config.json")));
        Assert.Equal("float16", ModelConfig.Load(Path.Combine(outDir, "config.json")).TorchDtype);
        int[] bytes = [256, 72, 105, 33];
        float[] a = Logits(Path.Combine(ckpt, "model"), bytes), b = Logits(outDir, bytes);
        Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) < 1e-2);   // fp16 rounding only

        // A training checkpoint without its model/ subfolder says so.
        string bare = Path.Combine(tmp.Path, "run", "checkpoint-20");
        Directory.CreateDirectory(bare);
        File.WriteAllText(Path.Combine(bare, "trainer_state.json"), "{}");
        File.WriteAllText(Path.Combine(bare, "model.bin"), "x");
        r = CliRunner.Run("convert", "-m", bare, "-o", Path.Combine(tmp.Path, "out2"));
        Assert.Equal(1, r.Code);
        Assert.Contains("a FineAlign training checkpoint without a Hugging Face model in its 'model/' subfolder", r.Err);
    }

    [Fact]
    public void Bad_input_leaves_no_output_folder()
    {
        using var tmp = TestPaths.NewTempDir();
        string pickle = Path.Combine(tmp.Path, "pickle");
        Directory.CreateDirectory(pickle);
        File.WriteAllText(Path.Combine(pickle, "pytorch_model.bin"), "not really");
        string outDir = Path.Combine(tmp.Path, "out");
        var r = CliRunner.Run("convert", "-m", pickle, "-o", outDir);
        Assert.Equal(1, r.Code);
        Assert.Single(CliRunner.Lines(r.Err));
        Assert.Contains("pickle checkpoints are not loaded for safety", r.Err);

        // Valid config, truncated weights: fails while loading, before anything is written.
        string broken = Path.Combine(tmp.Path, "broken");
        Directory.CreateDirectory(broken);
        string src = TestPaths.RequireShared("fixtures/llama-tiny");
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(broken, "config.json"));
        byte[] weights = File.ReadAllBytes(Path.Combine(src, "model.safetensors"));
        File.WriteAllBytes(Path.Combine(broken, "model.safetensors"), weights[..(weights.Length / 2)]);
        r = CliRunner.Run("convert", "-m", broken, "-o", outDir, "--max-shard-size", "10KB");
        Assert.Equal(1, r.Code);
        Assert.Contains("model.safetensors", r.Err);

        Assert.False(Directory.Exists(outDir));
        Assert.Equal(["broken", "pickle"], Directory.GetFileSystemEntries(tmp.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        Assert.Equal(2, CliRunner.Run("convert", "-m", src, "-o", outDir, "--max-shard-size", "lots").Code);
        Assert.Equal(2, CliRunner.Run("convert", "-m", src, "-o", outDir, "--dtype", "int8").Code);
        Assert.False(Directory.Exists(outDir));
    }

    [Theory]
    [InlineData("5GB", 5_000_000_000L)]
    [InlineData("500MB", 500_000_000L)]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("1.5gb", 1_500_000_000L)]
    [InlineData("100KB", 100_000L)]
    [InlineData("12345", 12345L)]
    [InlineData("0", null)]
    [InlineData("-3MB", null)]
    [InlineData("big", null)]
    public void Shard_sizes_parse_like_transformers(string text, long? bytes) =>
        Assert.Equal(bytes, ModelFolder.ParseSize(text));
}
