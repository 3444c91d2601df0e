using System.Text;
using System.Text.Json;
using FineAlign.Models;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

public class SafeTensorsTests
{
    /// <summary>A safetensors file from a literal header and data (header length taken from the header unless overridden).</summary>
    private static string WriteRaw(string dir, string header, byte[] data, ulong? headerLength = null, string name = "model.safetensors")
    {
        string path = Path.Combine(dir, name);
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes(headerLength ?? (ulong)h.Length));
        fs.Write(h);
        fs.Write(data);
        return path;
    }

    [Fact]
    public void ReadsBf16AndF16BitPatternsAsTheirKnownValues()
    {
        using var tmp = TestPaths.NewTempDir();
        // bf16: 0x3F80 = 1.0, 0xC000 = -2.0, 0x4049 = 3.140625, 0x0000 = 0
        // f16:  0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 = 0.333251953125, 0x7BFF = 65504 (max)
        ushort[] bf = { 0x3F80, 0xC000, 0x4049, 0x0000 };
        ushort[] hf = { 0x3C00, 0xC000, 0x3555, 0x7BFF };
        var data = new byte[16];
        Buffer.BlockCopy(bf, 0, data, 0, 8);
        Buffer.BlockCopy(hf, 0, data, 8, 8);
        string header = """{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}}""";
        string path = WriteRaw(tmp.Path, header, data);

        using var f = SafeTensorsFile.Open(path);
        using var a = f.Read("a");
        Assert.Equal(ScalarType.BFloat16, a.dtype);
        Assert.Equal(new long[] { 2, 2 }, a.shape);
        using var a32 = f.Read("a", ScalarType.Float32);
        Assert.Equal(new[] { 1.0f, -2.0f, 3.140625f, 0f }, a32.data<float>().ToArray());
        using var b32 = f.Read("b", ScalarType.Float32);
        Assert.Equal(new[] { 1.0f, -2.0f, 0.333251953125f, 65504f }, b32.data<float>().ToArray());
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Int64)]
    public void RoundTripKeepsDtypeShapeAndBits(ScalarType dtype)
    {
        using var tmp = TestPaths.NewTempDir();
        var gen = new torch.Generator(7);
        using var x = (randn(new long[] { 3, 5 }, generator: gen) * 100).to(dtype);
        using var y = (randn(new long[] { 7 }, generator: gen) * 100).to(dtype);
        using var empty0 = zeros(new long[] { 0, 4 }, dtype);
        string path = Path.Combine(tmp.Path, "t.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["x"] = x, ["y.weight"] = y, ["e"] = empty0 });

        // Header length + 8 is a multiple of 8 (data region aligned) and metadata says pt.
        var bytes = File.ReadAllBytes(path);
        ulong n = BitConverter.ToUInt64(bytes, 0);
        Assert.Equal(0UL, (8 + n) % 8);
        Assert.Equal(new[] { path }, Directory.GetFiles(tmp.Path));   // no temp file left behind

        var loaded = SafeTensors.Load(path);
        Assert.Equal(dtype, loaded["x"].dtype);
        Assert.True(loaded["x"].equal(x).all().item<bool>());
        Assert.True(loaded["y.weight"].equal(y).all().item<bool>());
        Assert.Equal(new long[] { 0, 4 }, loaded["e"].shape);
        using var f = SafeTensorsFile.Open(path);
        Assert.Equal("pt", f.Metadata["format"]);
        foreach (var t in loaded.Values) t.Dispose();
    }

    [Fact]
    public void ShardedWriteThenCheckpointReadsEveryTensorFromItsShard()
    {
        using var tmp = TestPaths.NewTempDir();
        var tensors = Enumerable.Range(0, 5).ToDictionary(i => $"t{i}", i => full(new long[] { 10 }, i, ScalarType.Float32));
        var files = SafeTensors.SaveSharded(tmp.Path, tensors, maxShardBytes: 80);   // 40 bytes each → 2 per shard
        Assert.Equal(new[] { "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", SafeTensors.IndexFileName }, files);
        var map = SafeTensors.ReadIndex(Path.Combine(tmp.Path, SafeTensors.IndexFileName));
        Assert.EndsWith("model-00003-of-00003.safetensors", map["t4"]);

        using var ck = SafeTensorsCheckpoint.Open(tmp.Path);
        Assert.Equal(5, ck.Names.Count());
        for (int i = 0; i < 5; i++)
        {
            using var t = ck.Read($"t{i}");
            Assert.Equal(i * 10f, t.sum().item<float>());
        }
        ck.Dispose();
        // Rewritten as one file into the same folder: the old index must not shadow it.
        Assert.Equal(new[] { SafeTensors.SingleFileName }, SafeTensors.SaveSharded(tmp.Path, tensors, long.MaxValue));
        Assert.False(File.Exists(Path.Combine(tmp.Path, SafeTensors.IndexFileName)));
        foreach (var t in tensors.Values) t.Dispose();
    }

    [Theory]
    [InlineData("../evil.safetensors")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/model.safetensors")]
    [InlineData("..")]
    public void IndexThatPointsOutsideTheFolderIsRefused(string shard)
    {
        using var tmp = TestPaths.NewTempDir();
        string index = Path.Combine(tmp.Path, SafeTensors.IndexFileName);
        File.WriteAllText(index, JsonSerializer.Serialize(new { weight_map = new Dictionary<string, string> { ["w"] = shard } }));
        var e = Assert.Throws<FineAlignException>(() => SafeTensorsCheckpoint.Open(tmp.Path));
        Assert.Contains(SafeTensors.IndexFileName, e.Message);
        Assert.Contains("'w'", e.Message);
    }

    public static IEnumerable<object[]> HostileFiles() => new[]
    {
        // name, header, data length, header-length override, expected message fragment
        new object[] { "header length huge", "{}", 0, (ulong)1 << 40, "exceeds" },
        new object[] { "header past end", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, (ulong)5000, "past the end" },
        new object[] { "header length zero", "{}", 0, (ulong)0, "length is 0" },
        new object[] { "non-JSON header", "{not json at all", 0, null!, "not valid JSON" },
        new object[] { "JSON array header", "[1,2,3]", 0, null!, "JSON object" },
        new object[] { "unknown dtype", """{"a":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}}""", 1, null!, "'a'" },
        new object[] { "offsets outside file", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, null!, "outside" },
        new object[] { "wrong length for shape", """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, null!, "needs 12 bytes" },
        new object[] { "overlapping tensors", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, null!, "overlap" },
        new object[] { "negative dim", """{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4, null!, "non-negative" },
        new object[] { "overflowing shape", """{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}""", 4, null!, "too large" },
        new object[] { "begin after end", """{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}""", 8, null!, "begin <= end" },
        new object[] { "duplicate tensor", """{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}""", 2, null!, "twice" },
    };

    [Theory]
    [MemberData(nameof(HostileFiles))]
    public void HostileFileIsRefusedWithMessageNamingTheFile(string what, string header, int dataLength, ulong? headerLength, string fragment)
    {
        using var tmp = TestPaths.NewTempDir();
        string path = WriteRaw(tmp.Path, header, new byte[dataLength], headerLength);
        var e = Assert.Throws<FineAlignException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(fragment, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(string.IsNullOrEmpty(what));
    }

    [Fact]
    public void TruncatedFileIsRefused()
    {
        using var tmp = TestPaths.NewTempDir();
        using var t = ones(new long[] { 64 });
        string path = Path.Combine(tmp.Path, "model.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = t });
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^10]);
        var e = Assert.Throws<FineAlignException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains("'w'", e.Message);

        File.WriteAllBytes(path, bytes[..5]);
        e = Assert.Throws<FineAlignException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("too short", e.Message);
    }

    [Fact]
    public void FolderWithOnlyPickleCheckpointIsRefusedForSafety()
    {
        using var tmp = TestPaths.NewTempDir();
        File.WriteAllText(Path.Combine(tmp.Path, "config.json"), """{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}""");
        File.WriteAllBytes(Path.Combine(tmp.Path, "pytorch_model.bin"), new byte[] { 0x80, 0x02 });
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Load(tmp.Path));
        Assert.Contains("pytorch_model.bin", e.Message);
        Assert.Contains("not loaded for safety", e.Message);
        Assert.Contains("safe_serialization=True", e.Message);
    }

    [Fact]
    public void MissingFolderConfigOrWeightsGiveClearErrors()
    {
        using var tmp = TestPaths.NewTempDir();
        string missing = Path.Combine(tmp.Path, "nope");
        Assert.Contains("not found", Assert.Throws<FineAlignException>(() => ModelIO.Load(missing)).Message);
        Assert.Contains("config.json", Assert.Throws<FineAlignException>(() => ModelIO.Load(tmp.Path)).Message);
        File.WriteAllText(Path.Combine(tmp.Path, "config.json"), """{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}""");
        Assert.Contains("no weights", Assert.Throws<FineAlignException>(() => ModelIO.Load(tmp.Path)).Message);
    }
}
