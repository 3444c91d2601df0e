using System.Security.Cryptography;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;

namespace FineAlign.Tests.Models;

/// <summary>
/// The Hugging Face hub cache layout built in a temp dir, as huggingface_hub writes it:
/// <c>models--org--name/{blobs/&lt;sha256&gt;, refs/main, snapshots/&lt;commit&gt;/file → ../../blobs/&lt;sha256&gt;}</c>.
/// </summary>
public class HubCacheTests
{
    // Moves every file of `model` into the cache as a blob and links it from snapshots/<commit>/.
    private static string AddToCache(string cacheRoot, string repoId, string model, string commit, bool setMain = true)
    {
        string repo = Path.Combine(cacheRoot, "models--" + repoId.Replace("/", "--"));
        string snapshot = Path.Combine(repo, "snapshots", commit);
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(snapshot);
        foreach (string file in Directory.GetFiles(model))
        {
            string sha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(file)));
            string blob = Path.Combine(repo, "blobs", sha);
            if (!File.Exists(blob)) File.Copy(file, blob);
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", sha));
        }
        if (setMain)
        {
            Directory.CreateDirectory(Path.Combine(repo, "refs"));
            File.WriteAllText(Path.Combine(repo, "refs", "main"), commit);
        }
        return snapshot;
    }

    [Fact]
    public void SymlinkedSnapshot_LoadsModelAndTokenizer_AndRefsMainPicksTheRevision()
    {
        using var tmp = TestPaths.NewTempDir();
        string src = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "src"));
        string other = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "other"), seed: 99);
        string cache = Path.Combine(tmp.Path, "hub");
        AddToCache(cache, "acme/tiny", other, "1111111111111111111111111111111111111111", setMain: false);
        string snapshot = AddToCache(cache, "acme/tiny", src, "2222222222222222222222222222222222222222");
        Assert.NotNull(new FileInfo(Path.Combine(snapshot, SafeTensors.SingleFileName)).LinkTarget);

        Assert.Equal(snapshot, ModelLocator.FindInHubCache("acme/tiny", [Path.Combine(tmp.Path, "empty"), cache]));
        using var fromCache = ModelIO.Load(snapshot);
        using var original = ModelIO.Load(src);
        int[] ids = [256, 72, 105, 257];
        Assert.Equal(CommandFixtures.Logits(src, ids), CommandFixtures.Logits(snapshot, ids));
        Assert.Equal(new ByteTokenizer().Encode("hi"), TokenizerLoader.Load(snapshot).Encode("hi"));

        // A folder that is itself a link to the snapshot (a user's ./tiny → …/snapshots/<rev>) loads too.
        string alias = Path.Combine(tmp.Path, "tiny");
        Directory.CreateSymbolicLink(alias, snapshot);
        using (ModelIO.Load(alias)) { }
        Assert.Equal(new ByteTokenizer().Encode("ok"), TokenizerLoader.Load(alias).Encode("ok"));

        // A revision by snapshot name.
        Assert.EndsWith("1111111111111111111111111111111111111111",
            ModelLocator.FindInHubCache("acme/tiny@1111111111111111111111111111111111111111", [cache]));
    }

    [Fact]
    public void MissingRepoOrRevision_ListsWhereItLooked()
    {
        using var tmp = TestPaths.NewTempDir();
        string a = Path.Combine(tmp.Path, "a"), b = Path.Combine(tmp.Path, "b");
        var e = Assert.Throws<FineAlignException>(() => ModelLocator.FindInHubCache("acme/none", [a, b]));
        Assert.Contains(Path.Combine(a, "models--acme--none"), e.Message);
        Assert.Contains(Path.Combine(b, "models--acme--none"), e.Message);
        Assert.Contains("does not download", e.Message);

        string src = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "src"));
        AddToCache(a, "acme/two", src, "aaaa", setMain: false);
        AddToCache(a, "acme/two", src, "bbbb", setMain: false);
        var noMain = Assert.Throws<FineAlignException>(() => ModelLocator.FindInHubCache("acme/two", [a]));
        Assert.Contains("refs/main missing", noMain.Message);
        Assert.Contains("aaaa", noMain.Message);
        Assert.Contains("acme/two@<revision>", noMain.Message);
    }

    [Fact]
    public void SymlinkLeavingTheCacheRepository_IsRefused()
    {
        using var tmp = TestPaths.NewTempDir();
        string src = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "src"));
        string snapshot = AddToCache(Path.Combine(tmp.Path, "hub"), "acme/evil", src, "cccc");
        string config = Path.Combine(snapshot, "config.json");
        File.Delete(config);
        File.CreateSymbolicLink(config, Path.Combine(src, "config.json"));  // outside models--acme--evil/
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Load(snapshot));
        Assert.StartsWith($"{config}: is a symlink to {Path.Combine(src, "config.json")}, which lies outside the Hugging Face cache repository", e.Message);

        string tok = Path.Combine(snapshot, "tokenizer_config.json");
        File.Delete(tok);
        File.CreateSymbolicLink(tok, "/etc/hostname");
        Assert.Contains("lies outside", Assert.Throws<FineAlignException>(() => TokenizerLoader.Load(snapshot)).Message);
    }

    [Fact]
    public void PlainFolder_SymlinkInsideLoads_SymlinkOutsideIsRefused()
    {
        using var tmp = TestPaths.NewTempDir();
        string src = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "src"));
        string weights = Path.Combine(src, SafeTensors.SingleFileName);
        // Inside the folder: model.safetensors → weights/real.safetensors.
        Directory.CreateDirectory(Path.Combine(src, "weights"));
        File.Move(weights, Path.Combine(src, "weights", "real.safetensors"));
        File.CreateSymbolicLink(weights, Path.Combine("weights", "real.safetensors"));
        using (ModelIO.Load(src)) { }

        // Outside: the same link from another folder is refused, naming the link, not "header runs past the end".
        string elsewhere = Path.Combine(tmp.Path, "elsewhere");
        Directory.CreateDirectory(elsewhere);
        File.Copy(Path.Combine(src, "config.json"), Path.Combine(elsewhere, "config.json"));
        File.CreateSymbolicLink(Path.Combine(elsewhere, SafeTensors.SingleFileName), Path.Combine(src, "weights", "real.safetensors"));
        var e = Assert.Throws<FineAlignException>(() => ModelIO.Load(elsewhere));
        Assert.Contains("lies outside the model folder", e.Message);
        Assert.DoesNotContain("runs past the end", e.Message);
    }

    [Fact]
    public void Resolve_NamesARepoIdOnlyWhenNoSuchFolderExists()
    {
        Assert.True(ModelLocator.LooksLikeRepoId("Qwen/Qwen3-0.6B"));
        Assert.True(ModelLocator.LooksLikeRepoId("meta-llama/Llama-3.2-1B@main"));
        Assert.False(ModelLocator.LooksLikeRepoId("/abs/path"));
        Assert.False(ModelLocator.LooksLikeRepoId("a/b/c"));
        Assert.False(ModelLocator.LooksLikeRepoId("../x"));
        Assert.False(ModelLocator.LooksLikeRepoId("plain"));
        Assert.Contains("model folder not found", Assert.Throws<FineAlignException>(() => ModelLocator.Resolve("/no/such/folder")).Message);
    }
}
