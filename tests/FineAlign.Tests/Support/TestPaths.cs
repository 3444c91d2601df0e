namespace FineAlign.Tests.Support;

/// <summary>Locates the repository root and the <c>../shared</c> folder beside it.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary><c>../shared</c> beside the repository root (may not exist).</summary>
    public static string Shared => Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));

    /// <summary>
    /// A path inside <c>../shared</c>; fails with a clear message when the shared folder is absent,
    /// instead of an obscure file-not-found deep inside a test.
    /// </summary>
    public static string RequireShared(string relative)
    {
        string p = Path.Combine(Shared, relative);
        if (!File.Exists(p) && !Directory.Exists(p))
            throw new InvalidOperationException(
                $"This test needs '{relative}' from the shared folder, expected at {p}. " +
                "Place the project's shared/ folder beside the repository root (as CI does).");
        return p;
    }

    /// <summary>A fresh empty temporary directory, deleted by the caller via <see cref="TempDir.Dispose"/>.</summary>
    public static TempDir NewTempDir() => new();

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "FineAlign.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("Cannot find FineAlign.slnx above " + AppContext.BaseDirectory);
    }
}

public sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "finealign-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try { Directory.Delete(Path, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
